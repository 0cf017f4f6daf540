//! The formatter: AST (plus the file's comments) -> canonical text. Every run proves itself:
//! the output is parsed again and must give the same AST (spans ignored) and the same comments,
//! or formatting fails with an internal error and the file is left alone.

use crate::policy::syntax::ast::*;
use crate::policy::syntax::span::Spanned;

/// Formatting went wrong: the output would not mean the same as the input.
#[derive(Debug, thiserror::Error)]
pub enum FmtError {
    /// The input does not parse.
    #[error("the file does not parse")]
    Parse(Vec<crate::policy::diagnostic::Diagnostic>),
    /// The formatter produced something that means something else. A bug.
    #[error("internal error: formatting would change the policy ({0})")]
    Unsound(String),
}

/// Formats policy text.
pub fn format_source(text: &str) -> Result<String, FmtError> {
    let file = crate::policy::syntax::parse(0, text).map_err(FmtError::Parse)?;
    let out = format_file(&file, text);
    let again = crate::policy::syntax::parse(0, &out)
        .map_err(|d| FmtError::Unsound(d.first().map(|d| d.message.clone()).unwrap_or_default()))?;
    if again.items != file.items {
        return Err(FmtError::Unsound("the declarations differ".into()));
    }
    let norm = |c: &[Spanned<String>]| c.iter().map(|c| c.node.trim_end().to_string()).collect::<Vec<_>>();
    if norm(&again.comments) != norm(&file.comments) {
        return Err(FmtError::Unsound("comments were lost or moved out of order".into()));
    }
    Ok(out)
}

/// Formats a parsed file; `text` is its source (for comments and blank lines).
pub fn format_file(file: &File, text: &str) -> String {
    let mut out = Out {
        buf: String::new(),
        comments: &file.comments,
        next: 0,
        src: text,
        last_end: None,
        last_nl: 0,
        prev_end: 0,
    };
    let mut prev: Option<&Item> = None;
    for item in &file.items {
        if let Some(p) = prev {
            let small = |i: &Item| matches!(i, Item::Let(_) | Item::Include(_));
            let gap = text.get(p.span().end as usize..item.span().start as usize).unwrap_or("");
            if !(small(p) && small(item)) || has_blank_line(gap) {
                out.blank();
            }
        }
        match item {
            Item::Let(l) => {
                let line = format!("let {} = {}", l.node.name.node, expr(&l.node.value.node));
                out.line(0, &line, l.span.start, l.span.end);
            }
            Item::Include(i) => out.line(0, &format!("include {}", string(&i.node)), i.span.start, i.span.end),
            Item::Rule(r) => {
                let head = format!("rule {} {{", string(&r.node.name.node));
                out.line(0, &head, r.span.start, r.node.name.span.end);
                out.line(1, &format!("when {}", expr(&r.node.when.node)), r.node.when_span.start, r.node.when_span.end);
                out.line(
                    1,
                    &format!("then {}", target(&r.node.then.node)),
                    r.node.then.span.start,
                    r.node.then.span.end,
                );
                for o in &r.node.options {
                    out.line(1, &option(&o.node), o.span.start, o.span.end);
                }
                out.line(0, "}", r.node.close.start, r.node.close.end);
            }
            Item::Default(d) => {
                out.line(0, "default {", d.span.start, d.span.start + 7);
                out.line(
                    1,
                    &format!("then {}", target(&d.node.then.node)),
                    d.node.then.span.start,
                    d.node.then.span.end,
                );
                for o in &d.node.options {
                    out.line(1, &option(&o.node), o.span.start, o.span.end);
                }
                out.line(0, "}", d.node.close.start, d.node.close.end);
            }
        }
        prev = Some(item);
    }
    out.flush_before(u32::MAX, 0);
    out.buf
}

fn has_blank_line(gap: &str) -> bool {
    let mut lines = gap.split('\n');
    lines.next();
    let mut rest: Vec<&str> = lines.collect();
    rest.pop();
    rest.iter().any(|l| l.trim().is_empty())
}

struct Out<'a> {
    buf: String,
    comments: &'a [Spanned<String>],
    next: usize,
    src: &'a str,
    /// Source end of the construct on the last line written.
    last_end: Option<u32>,
    /// Where that line's newline sits in `buf`.
    last_nl: usize,
    /// Source end of the last thing written (construct or comment).
    prev_end: u32,
}

impl Out<'_> {
    fn blank(&mut self) {
        if !self.buf.is_empty() && !self.buf.ends_with("\n\n") {
            self.buf.push('\n');
        }
    }

    fn push_line(&mut self, indent: usize, text: &str) {
        for _ in 0..indent {
            self.buf.push_str("  ");
        }
        self.buf.push_str(text);
        self.buf.push('\n');
    }

    /// Writes the comments that start before `pos`. A comment on the same source line as the end
    /// of the last construct written trails that line; the others get lines of their own.
    fn flush_before(&mut self, pos: u32, indent: usize) {
        while let Some(c) = self.comments.get(self.next) {
            if c.span.start >= pos {
                break;
            }
            let trailing = self.last_end.is_some_and(|end| {
                c.span.start >= end
                    && self.src.get(end as usize..c.span.start as usize).is_some_and(|b| !b.contains('\n'))
            });
            if trailing {
                let text = format!("  {}", c.node.trim_end());
                self.buf.insert_str(self.last_nl, &text);
                self.last_nl += text.len();
                // Only one comment can trail a line.
                self.last_end = None;
            } else {
                if self.gap_has_blank(c.span.start) {
                    self.blank();
                }
                self.push_line(indent, c.node.trim_end());
                self.last_end = None;
                self.last_nl = self.buf.len() - 1;
            }
            self.prev_end = c.span.end;
            self.next += 1;
        }
    }

    /// Whether the source has an empty line between the last thing written and `pos`.
    fn gap_has_blank(&self, pos: u32) -> bool {
        !self.buf.is_empty() && self.src.get(self.prev_end as usize..pos as usize).is_some_and(has_blank_line)
    }

    /// Writes one line for the construct at `start..end`, after the comments that precede it.
    fn line(&mut self, indent: usize, text: &str, start: u32, end: u32) {
        let flushed = self.next;
        self.flush_before(start, indent);
        if self.next > flushed && self.gap_has_blank(start) {
            self.blank();
        }
        self.push_line(indent, text);
        self.prev_end = end;
        self.last_end = Some(end);
        self.last_nl = self.buf.len() - 1;
    }
}

/// A string literal with escapes.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A condition, on one line.
pub fn expr(e: &Expr) -> String {
    match e {
        Expr::Or(ts) => ts.iter().map(|t| expr(&t.node)).collect::<Vec<_>>().join(" or "),
        Expr::And(ts) => ts.iter().map(|t| expr(&t.node)).collect::<Vec<_>>().join(" and "),
        Expr::Not(x) => format!("not {}", expr(&x.node)),
        Expr::Paren(x) => format!("({})", expr(&x.node)),
        Expr::Compare { lhs, op, rhs } => format!("{} {} {}", value(&lhs.node), op.node.as_str(), value(&rhs.node)),
        Expr::Matches { lhs, regex } => {
            format!(
                "{} matches /{}/{}",
                value(&lhs.node),
                regex.node.pattern.replace('/', "\\/"),
                if regex.node.insensitive { "i" } else { "" }
            )
        }
        Expr::Value(v) => value(&v.node),
    }
}

/// A value.
pub fn value(v: &Value) -> String {
    match v {
        Value::Str(s) => string(s),
        Value::Num(_, raw) | Value::Percent(_, raw) | Value::Dollars(_, raw) | Value::Duration(_, raw) => raw.clone(),
        Value::Bool(b) => b.to_string(),
        Value::None => "none".to_string(),
        Value::List(items) => format!("[{}]", items.iter().map(|i| value(&i.node)).collect::<Vec<_>>().join(", ")),
        Value::Name(n) => n.clone(),
        Value::Call(f, args) => {
            format!("{}({})", f.node, args.iter().map(|a| value(&a.node)).collect::<Vec<_>>().join(", "))
        }
    }
}

fn with(fields: &[WithField]) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let inner =
        fields.iter().map(|f| format!("{}: {}", f.name.node, value(&f.value.node))).collect::<Vec<_>>().join(", ");
    format!(" with ({inner})")
}

/// A target, on one line.
pub fn target(t: &Target) -> String {
    match t {
        Target::Chain(steps) => steps.iter().map(|s| target(&s.node)).collect::<Vec<_>>().join(" -> "),
        Target::Model { name, quoted, with: w } => {
            let n = if *quoted { string(&name.node) } else { name.node.clone() };
            format!("{n}{}", with(w))
        }
        Target::Requested { with: w } => format!("requested{}", with(w)),
        Target::Pick { kind, set } => {
            format!("{}({})", kind.as_str(), set.iter().map(|v| value(&v.node)).collect::<Vec<_>>().join(", "))
        }
        Target::Split(arms) => {
            let arms =
                arms.iter().map(|a| format!("{}: {}", a.weight.node.1, target(&a.target.node))).collect::<Vec<_>>();
            format!("split {{ {} }}", arms.join(", "))
        }
        Target::Deny { status, message } => match status {
            Some(s) => format!("deny {} {}", s.node, string(message)),
            None => format!("deny {}", string(message)),
        },
    }
}

fn option(o: &RuleOption) -> String {
    let mut s = format!("{} {}", o.name.node, o.values.iter().map(|v| value(&v.node)).collect::<Vec<_>>().join(", "));
    match o.mode.as_ref().map(|m| &m.node) {
        Some(CacheMode::Shared) => s.push_str(" shared"),
        Some(CacheMode::Similar { raw, model, .. }) => {
            let model = if model.node.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c)) {
                model.node.clone()
            } else {
                string(&model.node)
            };
            s.push_str(&format!(" similar {raw} using {model}"));
        }
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_comments_and_is_idempotent() {
        let src = "# head\nlet a = [\"x\",\"y\"]   # trailing\nlet b=1\n\nrule \"r\" { # on header\n  when prompt contains any a   # why\n then m1->m2 # chain\n retries 1\n # before close\n}\ndefault { then m }\n# tail\n";
        let once = format_source(src).unwrap();
        let twice = format_source(&once).unwrap();
        assert_eq!(once, twice);
        for c in ["# head", "# trailing", "# on header", "# why", "# chain", "# before close", "# tail"] {
            assert!(once.contains(c), "{c} lost in\n{once}");
        }
        assert!(once.contains("  then m1 -> m2  # chain\n"), "{once}");
    }
}
