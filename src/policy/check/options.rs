//! Rule options: `retries`, `timeout`, `tag`, `only` and `cache` -> [`RuleOptions`] (E0206 unknown
//! option, E0304 a value out of range).

use super::Checker;
use crate::policy::diagnostic::codes::Code;
use crate::policy::diagnostic::Diagnostic;
use crate::policy::ir::names::{self};
use crate::policy::ir::*;
use crate::policy::syntax::ast::{self, Value};
use crate::policy::syntax::span::{Span, Spanned};
use crate::util::fuzzy::did_you_mean;

impl Checker {
    pub(super) fn options(&mut self, opts: &[Spanned<ast::RuleOption>]) -> Option<RuleOptions> {
        let mut out = RuleOptions::default();
        let mut ok = true;
        let mut seen: Vec<&str> = Vec::new();
        for o in opts {
            let name = o.node.name.node.as_str();
            if seen.contains(&name) {
                self.push(
                    Diagnostic::new(Code::BadValue, o.node.name.span, format!("`{name}` is given twice"))
                        .label("again here")
                        .help("keep one"),
                );
                ok = false;
                continue;
            }
            seen.push(name);
            if let (Some(m), false) = (&o.node.mode, name == "cache") {
                self.push(
                    Diagnostic::new(Code::BadValue, m.span, format!("`{name}` takes no `shared` or `similar`"))
                        .label("only `cache` takes this")
                        .help("write `cache 1h shared` or `cache 24h similar 95% using MODEL`"),
                );
                ok = false;
                continue;
            }
            let one = match o.node.values.as_slice() {
                [v] => Some(&v.node),
                _ => None,
            };
            let bad = |this: &mut Self, want: &str| {
                this.push(
                    Diagnostic::new(Code::BadValue, o.span, format!("`{name}` takes {want}"))
                        .label(format!("expected {want}")),
                );
            };
            match name {
                "retries" => match one {
                    Some(Value::Num(n, _)) if *n >= 0.0 && *n <= 10.0 && n.fract() == 0.0 => {
                        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked 0..=10")]
                        let n = *n as u32;
                        out.retries = n;
                    }
                    _ => {
                        bad(self, "a whole number from 0 to 10");
                        ok = false;
                    }
                },
                "timeout" => match one {
                    Some(Value::Duration(ms, _)) if *ms > 0 => out.timeout_ms = Some(*ms),
                    _ => {
                        bad(self, "a duration such as `20s`");
                        ok = false;
                    }
                },
                "cache" => match one {
                    Some(Value::Duration(ms, _)) if *ms > 0 => match self.cache_mode(*ms, o.node.mode.as_ref(), o.span)
                    {
                        Some(c) => out.cache = Some(c),
                        None => ok = false,
                    },
                    _ => {
                        bad(self, "a duration such as `1h`");
                        ok = false;
                    }
                },
                "tag" => match one {
                    Some(Value::Str(s)) => out.tag = Some(s.clone()),
                    _ => {
                        bad(self, "a string");
                        ok = false;
                    }
                },
                "only" => match self.only(&o.node.values, o.span) {
                    Some(s) => out.only = Some(s),
                    None => ok = false,
                },
                other => {
                    let help = did_you_mean(other, names::OPTIONS.iter().copied())
                        .map(|h| format!("did you mean `{h}`?"))
                        .unwrap_or_else(|| "rule options are `retries`, `timeout`, `cache`, `tag` and `only`".into());
                    self.push(
                        Diagnostic::new(
                            Code::UnknownOption,
                            o.node.name.span,
                            format!("unknown rule option `{other}`"),
                        )
                        .label("not an option")
                        .help(help),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// `cache DURATION [shared | similar PCT using MODEL]`: E0304 for a threshold over 100%, E0408
    /// for a `similar` model that does not serve embeddings.
    fn cache_mode(&mut self, ttl_ms: u64, mode: Option<&Spanned<ast::CacheMode>>, span: Span) -> Option<CacheIr> {
        let mut c = CacheIr { ttl_ms, shared: false, similar: None, span, mode_span: mode.map(|m| m.span) };
        match mode.map(|m| (&m.node, m.span)) {
            None => {}
            Some((ast::CacheMode::Shared, _)) => c.shared = true,
            Some((ast::CacheMode::Similar { threshold, raw, model }, span)) => {
                if !(*threshold > 0.0 && *threshold <= 1.0) {
                    self.push(
                        Diagnostic::new(Code::BadValue, span, format!("a similarity of {raw} cannot be reached"))
                            .label("out of range")
                            .help("a similarity is above 0% and at most 100%, as in `similar 95%`"),
                    );
                    return None;
                }
                let id = self.model(&model.node, model.span)?;
                if let Some(m) =
                    self.catalog.get(id).filter(|m| !self.open && m.endpoint != crate::catalog::Endpoint::Embeddings)
                {
                    self.push(
                        Diagnostic::new(
                            Code::WrongEndpoint,
                            model.span,
                            format!("`similar` needs an embeddings model, and `{}` serves chat", m.name),
                        )
                        .label("not an embeddings model")
                        .help("name a model with `endpoint: embeddings` in the catalog"),
                    );
                    return None;
                }
                c.similar = Some(SimilarIr { threshold: *threshold, model: id });
            }
        }
        Some(c)
    }

    /// `only SET`: a set with at least one model (E0407 for `only []`, which leaves nothing).
    fn only(&mut self, values: &[Spanned<Value>], span: crate::policy::syntax::span::Span) -> Option<SetIr> {
        let set = self.set(values)?;
        if set.models.is_empty() && !(self.open && set.kind != SetKind::List) {
            self.push(
                Diagnostic::new(Code::EmptySet, span, "`only` holds no model: nothing may be tried")
                    .label("an empty set")
                    .help("list the models this rule may use, as in `only tagged(\"eu\")`"),
            );
            return None;
        }
        Some(set)
    }
}
