//! `.dockerignore`: which paths of the build context are left out, with Docker's rules
//! (patterns cleaned like paths, `filepath.Match` syntax plus `**`, `!` exceptions, the last
//! matching pattern winning, a pattern matching a directory matching everything below it).

/// The patterns of a `.dockerignore` file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    exclusion: bool,
    tokens: Vec<Tok>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Quest,
    /// `[...]`: one character (never `/`) in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**` followed by more: nothing, or anything ending with `/`.
    DoubleStar,
    /// A trailing `**`: anything.
    Rest,
}

/// Cleans a path like Go's `path.Clean`.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

impl Ignore {
    /// Reads a `.dockerignore`: lines starting with `#` are comments, blank lines are skipped,
    /// patterns are trimmed and cleaned like paths (`dir/` is `dir`, a leading `/` is
    /// dropped), `!` makes an exception.
    pub fn parse(text: &str) -> Ignore {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            if p.is_empty() {
                // A lone "!" is refused by Docker; there is nothing to match.
                continue;
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1
                && let Some(stripped) = cleaned.strip_prefix('/')
            {
                cleaned = stripped.to_string();
            }
            patterns.push(Pattern {
                exclusion,
                tokens: compile(&cleaned),
            });
        }
        Ignore { patterns }
    }

    /// Whether the patterns hold nothing.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether a context-relative path (no leading `/`, `/`-separated) is excluded. The last
    /// matching pattern wins; a pattern matching one of the path's parent directories matches
    /// the path, so a path under an excluded directory is excluded unless an exception
    /// re-includes it.
    pub fn excluded(&self, path: &str) -> bool {
        let path = normalize(path);
        let parents: Vec<&str> = parent_prefixes(&path);
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let hit = p.matches(&path) || parents.iter().any(|d| p.matches(d));
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a directory must still be walked, although excluded, because some exception
    /// pattern could re-include something under it.
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir = normalize(dir);
        let mut prefixes = parent_prefixes(&dir);
        prefixes.push(&dir);
        let below = format!("{dir}/");
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| prefixes.iter().any(|d| p.matches(d)) || p.could_match_with_prefix(&below))
    }
}

fn normalize(path: &str) -> String {
    let c = clean(path);
    c.trim_start_matches('/').to_string()
}

/// `a`, `a/b` for `a/b/c`.
fn parent_prefixes(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).collect()
}

fn compile(p: &str) -> Vec<Tok> {
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    toks.push(Tok::Rest);
                } else {
                    toks.push(Tok::DoubleStar);
                }
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::Quest),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => match parse_class(&chars, i) {
                Some((tok, next)) => {
                    toks.push(tok);
                    i = next;
                }
                None => toks.push(Tok::Lit('[')),
            },
            c => toks.push(Tok::Lit(c)),
        }
    }
    toks
}

/// Parses a class after its `[`; returns it and the index after its `]`.
fn parse_class(chars: &[char], mut i: usize) -> Option<(Tok, usize)> {
    let mut negated = false;
    if matches!(chars.get(i), Some('^' | '!')) {
        negated = true;
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars.get(i)?
        } else {
            c
        };
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            i += 1;
            let c = *chars.get(i)?;
            hi = if c == '\\' {
                i += 1;
                *chars.get(i)?
            } else {
                c
            };
            i += 1;
        }
        ranges.push((lo, hi));
    }
}

/// NFA states: (token index, inside a `**` group).
type State = (usize, bool);

impl Pattern {
    /// Adds the states reachable without reading a character: past a `*`, past a `**` not
    /// yet entered.
    fn eps(&self, states: &mut Vec<State>) {
        let mut k = 0;
        while let Some(&(i, inside)) = states.get(k) {
            if !inside
                && matches!(
                    self.tokens.get(i),
                    Some(Tok::Star | Tok::DoubleStar | Tok::Rest)
                )
            {
                let s = (i + 1, false);
                if !states.contains(&s) {
                    states.push(s);
                }
            }
            k += 1;
        }
    }

    fn step(&self, states: &[State], c: char) -> Vec<State> {
        let mut next = Vec::new();
        let mut add = |s: State| {
            if !next.contains(&s) {
                next.push(s);
            }
        };
        for &(i, _) in states {
            let Some(t) = self.tokens.get(i) else {
                continue;
            };
            match t {
                Tok::Lit(l) => {
                    if *l == c {
                        add((i + 1, false));
                    }
                }
                Tok::Star => {
                    if c != '/' {
                        add((i, false));
                    }
                }
                Tok::Quest => {
                    if c != '/' {
                        add((i + 1, false));
                    }
                }
                Tok::Class { negated, ranges } => {
                    let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                    if c != '/' && inside != *negated {
                        add((i + 1, false));
                    }
                }
                Tok::DoubleStar => {
                    add((i, true));
                    if c == '/' {
                        add((i + 1, false));
                    }
                }
                Tok::Rest => add((i, false)),
            }
        }
        self.eps(&mut next);
        next
    }

    fn run(&self, s: &str) -> Vec<State> {
        let mut states = vec![(0, false)];
        self.eps(&mut states);
        for c in s.chars() {
            states = self.step(&states, c);
            if states.is_empty() {
                break;
            }
        }
        states
    }

    fn matches(&self, s: &str) -> bool {
        let end = self.tokens.len();
        self.run(s).iter().any(|&(i, inside)| i == end && !inside)
    }

    /// Whether some path starting with `prefix` could match (the rest of the pattern is
    /// assumed satisfiable).
    fn could_match_with_prefix(&self, prefix: &str) -> bool {
        !self.run(prefix).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean("dir/"), "dir");
        assert_eq!(clean("/abs//x/./y/../z"), "/abs/x/z");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean("./"), ".");
    }

    #[test]
    fn classes() {
        let ig = Ignore::parse("file[0-9].txt\n[!a]x\n");
        assert!(ig.excluded("file3.txt"));
        assert!(!ig.excluded("fileA.txt"));
        assert!(ig.excluded("bx"));
        assert!(!ig.excluded("ax"));
    }
}
