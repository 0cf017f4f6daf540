//! Diagnostics are plain data: a code, a severity, a message, labelled spans and a help line.
//! Every stage pushes them into a `Vec<Diagnostic>`; the CLI renders them with miette (human) or as
//! a flat JSON array (SPEC §9), and the server's `/admin` endpoints show them as JSON.

pub mod codes;

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

use super::syntax::span::{SourceMap, Span};
use codes::Code;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Information, such as `lint --costs` figures.
    Advice,
    /// Suspicious but loadable.
    Warning,
    /// The policy cannot load.
    Error,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Advice => "advice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// A labelled span.
#[derive(Clone, Debug)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there.
    pub text: String,
}

/// One finding.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    /// Stable code (see `docs/diagnostics.md`).
    pub code: Code,
    /// Lowercase message, no final period.
    pub message: String,
    /// The primary label.
    pub primary: Label,
    /// Secondary labels (same file as the primary one).
    pub secondary: Vec<Label>,
    /// A help line.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `span` with the code's default severity.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            primary: Label { span, text: String::new() },
            secondary: Vec::new(),
            help: None,
        }
    }

    /// Sets the primary label's text.
    pub fn label(mut self, text: impl Into<String>) -> Self {
        self.primary.text = text.into();
        self
    }

    /// Adds a secondary label.
    pub fn with_secondary(mut self, span: Span, text: impl Into<String>) -> Self {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    /// Sets the help line.
    pub fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }

    /// Sets the help line when there is one.
    pub fn maybe_help(mut self, text: Option<String>) -> Self {
        if text.is_some() {
            self.help = text;
        }
        self
    }

    /// The severity, which follows from the code.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// Whether this stops the policy from loading.
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    /// The flat JSON form (SPEC §9).
    pub fn to_json(&self, sources: &SourceMap) -> JsonDiagnostic {
        let file = sources.get(self.primary.span.file);
        let (line, column) = sources.line_col(self.primary.span.file, self.primary.span.start as usize);
        JsonDiagnostic {
            code: self.code.as_str().to_string(),
            severity: self.severity(),
            file: file.map(|f| f.path.display().to_string()).unwrap_or_default(),
            line,
            column,
            message: self.message.clone(),
            help: self.help.clone(),
        }
    }

    /// Renders the miette graphical report (no colour, given width).
    pub fn render(&self, sources: &SourceMap, width: usize, color: bool) -> String {
        let theme = if color { GraphicalTheme::unicode() } else { GraphicalTheme::unicode_nocolor() };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
        let source = sources
            .get(self.primary.span.file)
            .map(|f| NamedSource::new(f.path.display().to_string(), f.text.to_string()));
        let report = Rendered { diag: self, source };
        let mut out = String::new();
        if handler.render_report(&mut out, &report).is_err() {
            out = format!("{}: {}\n", self.code.as_str(), self.message);
        }
        out
    }

    /// `file:line:col: severity[code]: message` on one line.
    pub fn one_line(&self, sources: &SourceMap) -> String {
        let j = self.to_json(sources);
        format!("{}:{}:{}: {}[{}]: {}", j.file, j.line, j.column, j.severity.as_str(), j.code, j.message)
    }
}

/// The flat JSON object of one diagnostic.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JsonDiagnostic {
    /// `E0201`.
    pub code: String,
    /// `error`, `warning` or `advice`.
    pub severity: Severity,
    /// The file, as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The message.
    pub message: String,
    /// The help line.
    pub help: Option<String>,
}

struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: Option<NamedSource<String>>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity() {
            Severity::Advice => miette::Severity::Advice,
            Severity::Warning => miette::Severity::Warning,
            Severity::Error => miette::Severity::Error,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let file = self.diag.primary.span.file;
        let primary = &self.diag.primary;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            (!primary.text.is_empty()).then(|| primary.text.clone()),
            primary.span.range(),
        )];
        for l in self.diag.secondary.iter().filter(|l| l.span.file == file) {
            labels.push(LabeledSpan::new_with_span((!l.text.is_empty()).then(|| l.text.clone()), l.span.range()));
        }
        Some(Box::new(labels.into_iter()))
    }
}
