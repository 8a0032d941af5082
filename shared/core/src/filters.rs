//! containerd's filter syntax: `<fieldpath>[<op><value>]` selectors joined by `,` (all must
//! match); a request's several filter strings are alternatives (any may match).
//!
//! Field path parts and values may be quoted with `"…"` (backslash escapes), `/…/` or `|…|`
//! (handy for regular expressions), so `labels."com.example.key"~=/^v[0-9]+$/` works.
//! Operators: `==`, `!=`, `~=` (regular expression); no operator tests presence.

use crate::errdefs::Error;
use regex::Regex;

/// An object that filters can look into, field by field.
pub trait Adaptor {
    /// The value at `path` (for example `["labels", "foo"]`), or `None` when absent.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let value = obj.field(&self.path);
        match (&self.op, value) {
            (Op::Present, v) => v.is_some(),
            (Op::Equal(want), Some(v)) => &v == want,
            (Op::NotEqual(want), Some(v)) => &v != want,
            (Op::NotEqual(_), None) => true,
            (Op::Matches(re), Some(v)) => re.is_match(&v),
            _ => false,
        }
    }
}

/// A parsed set of filters: alternatives of conjunctions. An empty filter matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses every filter string of a request. Empty strings are ignored.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Self, Error> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            any.push(parse_one(f).map_err(|e| e.context(format!("filter {f:?}")))?);
        }
        Ok(Self { any })
    }

    /// Whether `obj` matches any of the alternatives (anything, when there are none).
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|s| s.matches(obj)))
    }
}

struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
}

impl Scanner<'_> {
    fn skip_spaces(&mut self) {
        while self.chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    /// Reads a quoted token; the opening quote has not been consumed yet.
    fn quoted(&mut self) -> Result<String, Error> {
        let Some((at, quote)) = self.chars.next() else {
            return Err(Error::invalid_argument("unexpected end of filter"));
        };
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => {
                    return Err(Error::invalid_argument(format!(
                        "quoted string starting at {at} is not closed"
                    )));
                }
                Some((_, c)) if c == quote => return Ok(out),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, c)) if c == quote => out.push(c),
                    Some((_, c)) if quote != '"' => {
                        // Regular-expression quoting keeps other escapes for the regex engine.
                        out.push('\\');
                        out.push(c);
                    }
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, c)) => out.push(c),
                    None => return Err(Error::invalid_argument("dangling escape in filter")),
                },
                Some((_, c)) => out.push(c),
            }
        }
    }

    fn field(&mut self) -> Result<String, Error> {
        self.skip_spaces();
        if matches!(self.peek(), Some('"' | '/' | '|')) {
            return self.quoted();
        }
        let mut out = String::new();
        while let Some((_, c)) = self
            .chars
            .next_if(|&(_, c)| c == '_' || c.is_ascii_alphanumeric())
        {
            out.push(c);
        }
        if out.is_empty() {
            return Err(match self.chars.peek() {
                Some(&(i, c)) => {
                    Error::invalid_argument(format!("expected a field name at {i}, found {c:?}"))
                }
                None => Error::invalid_argument("expected a field name at end of filter"),
            });
        }
        Ok(out)
    }

    fn value(&mut self) -> Result<String, Error> {
        self.skip_spaces();
        if matches!(self.peek(), Some('"' | '/' | '|')) {
            return self.quoted();
        }
        let mut out = String::new();
        while let Some((_, c)) = self.chars.next_if(|&(_, c)| c != ',' && !c.is_whitespace()) {
            out.push(c);
        }
        if out.is_empty() {
            return Err(Error::invalid_argument(
                "expected a value after the operator",
            ));
        }
        Ok(out)
    }
}

fn parse_one(input: &str) -> Result<Vec<Selector>, Error> {
    let mut s = Scanner {
        chars: input.char_indices().peekable(),
    };
    let mut selectors = Vec::new();
    loop {
        let mut path = vec![s.field()?];
        while s.chars.next_if(|&(_, c)| c == '.').is_some() {
            path.push(s.field()?);
        }
        s.skip_spaces();
        let op = match s.chars.next() {
            None => {
                selectors.push(Selector {
                    path,
                    op: Op::Present,
                });
                return Ok(selectors);
            }
            Some((_, ',')) => {
                selectors.push(Selector {
                    path,
                    op: Op::Present,
                });
                continue;
            }
            Some((i, c @ ('=' | '!' | '~'))) => {
                if s.chars.next_if(|&(_, c)| c == '=').is_none() {
                    return Err(Error::invalid_argument(format!(
                        "expected an operator (==, != or ~=) at {i}"
                    )));
                }
                let value = s.value()?;
                match c {
                    '=' => Op::Equal(value),
                    '!' => Op::NotEqual(value),
                    _ => Op::Matches(Regex::new(&value).map_err(|e| {
                        Error::invalid_argument(format!("bad regular expression {value:?}: {e}"))
                    })?),
                }
            }
            Some((i, c)) => {
                return Err(Error::invalid_argument(format!(
                    "unexpected {c:?} at {i}, expected an operator or ','"
                )));
            }
        };
        selectors.push(Selector { path, op });
        s.skip_spaces();
        match s.chars.next() {
            None => return Ok(selectors),
            Some((_, ',')) => continue,
            Some((i, c)) => {
                return Err(Error::invalid_argument(format!(
                    "unexpected {c:?} at {i}, expected ','"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Obj(HashMap<&'static str, &'static str>);
    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            self.0.get(path.join(".").as_str()).map(|s| s.to_string())
        }
    }

    fn obj() -> Obj {
        Obj(HashMap::from([
            ("digest", "sha256:abc"),
            ("labels.foo", "bar"),
            ("labels.com.example", "v12"),
        ]))
    }

    fn m(filters: &[&str]) -> bool {
        Filter::parse_all(filters).expect("parse").matches(&obj())
    }

    #[test]
    fn selectors() {
        assert!(m(&[]));
        assert!(m(&["digest==sha256:abc"]));
        assert!(!m(&["digest!=sha256:abc"]));
        assert!(m(&["labels.foo"]));
        assert!(!m(&["labels.nope"]));
        assert!(m(&["labels.foo==bar,digest~=^sha256:"]));
        assert!(!m(&["labels.foo==bar,digest~=^sha512:"]));
        assert!(m(&["labels.nope", "labels.foo"]));
        assert!(m(&[r#"labels."com.example"~=/^v[0-9]+$/"#]));
        assert!(m(&["labels.nope!=x"]));
    }

    #[test]
    fn errors_name_the_filter() {
        for bad in ["==x", "labels.", "a=b", "a~=(", "a==\"x", "a==b c"] {
            let err = Filter::parse_all(&[bad]).expect_err(bad);
            assert!(
                err.message().contains(&format!("{bad:?}")),
                "{}",
                err.message()
            );
        }
    }
}
