//! Definition errors that say where (file, line, column, field), what is wrong and what is
//! allowed. Compilation produces field paths; the TOML source maps them to lines.

use std::fmt;

/// A field inside the definition, such as `milestone[2].count_at_least`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    /// Byte range of the deepest part of this path that the TOML document has.
    fn span_in(&self, doc: &toml_edit::ImDocument<&str>) -> Option<std::ops::Range<usize>> {
        let mut item = doc.as_item();
        let mut best = None;
        for segment in &self.0 {
            let next = match segment {
                Segment::Key(k) => {
                    if let Some(key_span) = item
                        .as_table_like()
                        .and_then(|t| t.get_key_value(k))
                        .and_then(|(key, _)| key.span())
                    {
                        best = Some(key_span);
                    }
                    item.get(k.as_str())
                }
                Segment::Index(i) => item.get(*i),
            };
            match next {
                Some(next) => {
                    item = next;
                    if let Some(span) = item.span() {
                        if matches!(segment, Segment::Index(_)) || best.is_none() {
                            best = Some(span);
                        }
                    }
                }
                None => break,
            }
        }
        best
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
    pub allowed: String,
    /// 1-based line and column, when the source format can tell.
    pub line: Option<usize>,
    pub column: Option<usize>,
    path: FieldPath,
}

impl DefinitionError {
    pub fn new(path: FieldPath, message: impl Into<String>, allowed: impl Into<String>) -> Self {
        DefinitionError {
            field: path.to_string(),
            message: message.into(),
            allowed: allowed.into(),
            line: None,
            column: None,
            path,
        }
    }
}

/// Every problem found in one definition file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionErrors {
    pub file: String,
    pub errors: Vec<DefinitionError>,
}

impl DefinitionErrors {
    pub(crate) fn located(file: &str, source: &str, mut errors: Vec<DefinitionError>) -> Self {
        if let Ok(doc) = toml_edit::ImDocument::parse(source) {
            for e in &mut errors {
                if let Some(span) = e.path.span_in(&doc) {
                    let (line, column) = line_column(source, span.start);
                    e.line = Some(line);
                    e.column = Some(column);
                }
            }
        }
        DefinitionErrors {
            file: file.to_owned(),
            errors,
        }
    }

    pub(crate) fn unlocated(file: &str, errors: Vec<DefinitionError>) -> Self {
        DefinitionErrors {
            file: file.to_owned(),
            errors,
        }
    }

    pub(crate) fn from_toml_syntax(file: &str, source: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e
            .span()
            .map(|s| line_column(source, s.start))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        let (message, allowed) = split_expected(e.message());
        DefinitionErrors {
            file: file.to_owned(),
            errors: vec![DefinitionError {
                field: field_at(source, e.span().map(|s| s.start)),
                message,
                allowed,
                line,
                column,
                path: FieldPath::root(),
            }],
        }
    }

    pub(crate) fn from_json_syntax(file: &str, e: &serde_json::Error) -> Self {
        let (message, allowed) = split_expected(&strip_json_position(&e.to_string()));
        DefinitionErrors {
            file: file.to_owned(),
            errors: vec![DefinitionError {
                field: String::new(),
                message,
                allowed,
                line: Some(e.line()),
                column: Some(e.column()),
                path: FieldPath::root(),
            }],
        }
    }
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = e.line {
                write!(f, ":{line}")?;
                if let Some(column) = e.column {
                    write!(f, ":{column}")?;
                }
            }
            write!(f, ": ")?;
            if !e.field.is_empty() {
                write!(f, "{}: ", e.field)?;
            }
            write!(f, "{}", e.message)?;
            if !e.allowed.is_empty() {
                write!(f, " (allowed: {})", e.allowed)?;
            }
        }
        Ok(())
    }
}

fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The key written on the line of a syntax error, if there is one: "count_at_leest = 3" → that key.
fn field_at(source: &str, offset: Option<usize>) -> String {
    let Some(offset) = offset else {
        return String::new();
    };
    let start = source[..offset.min(source.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = source[start..].lines().next().unwrap_or("");
    line.split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.contains(['[', '{', ' ']))
        .unwrap_or_default()
}

/// serde says "unknown field `x`, expected one of `a`, `b`": keep the two halves apart.
fn split_expected(message: &str) -> (String, String) {
    let message = message.trim();
    match message.split_once(", expected ") {
        Some((what, allowed)) => (what.to_owned(), allowed.to_owned()),
        None => (message.to_owned(), String::new()),
    }
}

fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
