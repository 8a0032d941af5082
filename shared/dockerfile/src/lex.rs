//! Variable expansion, as BuildKit's shell lexer does it for Dockerfile words: `$VAR`,
//! `${VAR}`, `${VAR:-word}` and friends, single quotes (literal), double quotes (`$` still
//! expanded, escapes of `"`, `$` and the escape character), the escape character elsewhere.

use crate::error::Error;

/// Expands the variables in one word with `lookup`, removing quotes and processing escapes.
///
/// Supports `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`,
/// `${VAR:?msg}`, `${VAR?msg}`, `${VAR#pat}`, `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`,
/// `${VAR/pat/repl}` and `${VAR//pat/repl}`. An unset variable expands to nothing.
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Error> {
    Lexer::new(escape, LexOptions::default(), lookup)
        .process_word(word)
        .map_err(|message| Error::Expand {
            word: word.to_string(),
            message,
        })
}

/// Like [`expand`], but splits the result into words on white space that is neither quoted,
/// escaped nor inside a variable's value… except that a variable's value, unquoted, is split
/// too (as BuildKit does for EXPOSE).
pub fn expand_words(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, Error> {
    Lexer::new(escape, LexOptions::default(), lookup)
        .process_words(text)
        .map_err(|message| Error::Expand {
            word: text.to_string(),
            message,
        })
}

/// The lexer's modes (BuildKit's `RawQuotes`, `RawEscapes`, `SkipUnsetEnv`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LexOptions {
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

pub(crate) struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    opts: LexOptions,
    raw_escapes: bool,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.buf.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(
        escape: char,
        opts: LexOptions,
        lookup: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Lexer {
            chars: Vec::new(),
            pos: 0,
            escape,
            opts,
            raw_escapes: opts.raw_escapes,
            lookup,
        }
    }

    fn reset(&mut self, input: &str) {
        self.chars = input.chars().collect();
        self.pos = 0;
        self.raw_escapes = self.opts.raw_escapes;
    }

    pub(crate) fn process_word(&mut self, input: &str) -> Result<String, String> {
        self.reset(input);
        let raw = self.raw_escapes;
        self.process_stop_on(None, raw).map(|(s, _)| s)
    }

    pub(crate) fn process_words(&mut self, input: &str) -> Result<Vec<String>, String> {
        self.reset(input);
        let raw = self.raw_escapes;
        self.process_stop_on(None, raw).map(|(_, w)| w)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), String> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if ch == self.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => {
                                words.add_raw_char(c);
                                result.push(c);
                            }
                        }
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    );
                }
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    );
                }
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut out = "<<".to_string();
        while let Some(c) = self.peek() {
            if matches!(c, '\t' | '\r' | ' ') {
                out.push(c);
                self.next();
            } else {
                break;
            }
        }
        out
    }

    fn get_env(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(c) = self.peek() {
                    if !c.is_numeric() {
                        break;
                    }
                    name.push(c);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !ch.is_numeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn stop_on_brace(&mut self, raw: bool) -> Result<String, String> {
        match self.process_stop_on(Some('}'), raw) {
            Ok((w, _)) => Ok(w),
            Err(e) => {
                if self.peek().is_none() {
                    Err("syntax error: missing '}'".into())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return match self.get_env(&name) {
                Some(v) => Ok(v),
                None if self.opts.skip_unset_env => Ok(format!("${name}")),
                None => Ok(String::new()),
            };
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(ch) = self.next() else {
            return Err("syntax error: missing '}'".into());
        };
        let chs = ch.to_string();
        match ch {
            '}' => match self.get_env(&name) {
                Some(v) => Ok(v),
                None if self.opts.skip_unset_env => Ok(format!("${{{name}}}")),
                None => Ok(String::new()),
            },
            ':' | '+' | '-' | '?' | '#' | '%' => self.process_modifier(&name, ch, chs),
            '/' => self.process_replace(&name),
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// `${name:-word}` and the other modifiers (`ch`, the first character after the name,
    /// and `chs`, what was read of the modifier so far): the value of `name` as modified.
    fn process_modifier(
        &mut self,
        name: &str,
        mut ch: char,
        mut chs: String,
    ) -> Result<String, String> {
        let null_is_unset = ch == ':';
        if null_is_unset {
            let Some(c) = self.next() else {
                return Err("syntax error: missing '}'".into());
            };
            ch = c;
            chs.push(c);
        }
        let raw = ch == '#' || ch == '%';
        if null_is_unset && raw {
            return Err(format!("unsupported modifier ({chs}) in substitution"));
        }
        let mut word = self.stop_on_brace(raw)?;
        let value = self.get_env(name);
        if self.opts.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{chs}{word}}}"));
        }
        let unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match ch {
            '-' => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if unset { String::new() } else { word }),
            '?' => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            '#' | '%' => {
                let mut greedy = false;
                if word.starts_with(ch) {
                    greedy = true;
                    word.remove(0);
                }
                let value = value.unwrap_or_default();
                let pat = ShellPattern::parse(&word)
                    .map_err(|e| format!("invalid pattern ({word}) in substitution: {e}"))?;
                let v: Vec<char> = value.chars().collect();
                if ch == '#' {
                    Ok(match pat.prefix_end(&v, greedy) {
                        Some(end) => v[end..].iter().collect(),
                        None => value,
                    })
                } else {
                    Ok(match pat.suffix_start(&v, greedy) {
                        Some(start) => v[..start].iter().collect(),
                        None => value,
                    })
                }
            }
            _ => Err(format!("unsupported modifier ({chs}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}` (after the first `/`).
    fn process_replace(&mut self, name: &str) -> Result<String, String> {
        let replace_all = self.peek() == Some('/');
        if replace_all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(e) => {
                return Err(if self.peek().is_none() {
                    "syntax error: missing '/' in ${}".into()
                } else {
                    e
                });
            }
        };
        let replacement = self.stop_on_brace(true)?;
        let value = self.get_env(name);
        let Some(value) = value else {
            if self.opts.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let pat = ShellPattern::parse(&pattern)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        Ok(pat.replace(&value, &replacement, replace_all))
    }
}

/// A shell pattern of `${VAR#pat}` and friends: `*`, `?`, `\` escapes, the rest literal.
#[derive(Debug)]
enum PatTok {
    Star,
    Any,
    Lit(char),
}

struct ShellPattern(Vec<PatTok>);

impl ShellPattern {
    fn parse(p: &str) -> Result<Self, String> {
        let chars: Vec<char> = p.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => toks.push(PatTok::Star),
                '?' => toks.push(PatTok::Any),
                '\\' => {
                    let next = chars.get(i).copied();
                    if matches!(next, Some('}' | '/')) {
                        continue;
                    }
                    i += 1;
                    match next {
                        Some(n @ ('*' | '?' | '\\')) => toks.push(PatTok::Lit(n)),
                        Some(n) => return Err(format!("invalid escape '\\{n}'")),
                        None => return Err("invalid escape '\\'".into()),
                    }
                }
                c => toks.push(PatTok::Lit(c)),
            }
        }
        Ok(ShellPattern(toks))
    }

    fn reversed(&self) -> ShellPattern {
        ShellPattern(
            self.0
                .iter()
                .rev()
                .map(|t| match t {
                    PatTok::Star => PatTok::Star,
                    PatTok::Any => PatTok::Any,
                    PatTok::Lit(c) => PatTok::Lit(*c),
                })
                .collect(),
        )
    }

    /// The ends `e` such that the pattern matches `s[start..e]`, ascending.
    fn match_ends(&self, s: &[char], start: usize) -> Vec<usize> {
        let n = self.0.len();
        let closure = |set: &mut Vec<bool>| {
            for i in 0..n {
                if set[i] && matches!(self.0[i], PatTok::Star) {
                    set[i + 1] = true;
                }
            }
        };
        let mut cur = vec![false; n + 1];
        cur[0] = true;
        closure(&mut cur);
        let mut ends = Vec::new();
        let mut pos = start;
        loop {
            if cur[n] {
                ends.push(pos);
            }
            let Some(&c) = s.get(pos) else { break };
            let mut next = vec![false; n + 1];
            let mut any = false;
            for i in 0..n {
                if !cur[i] {
                    continue;
                }
                match self.0[i] {
                    PatTok::Star => next[i] = true,
                    PatTok::Any => next[i + 1] = true,
                    PatTok::Lit(l) if l == c => next[i + 1] = true,
                    PatTok::Lit(_) => {}
                }
            }
            closure(&mut next);
            for b in &next {
                any |= *b;
            }
            if !any {
                break;
            }
            cur = next;
            pos += 1;
        }
        ends
    }

    fn prefix_end(&self, s: &[char], greedy: bool) -> Option<usize> {
        let ends = self.match_ends(s, 0);
        if greedy {
            ends.last().copied()
        } else {
            ends.first().copied()
        }
    }

    fn suffix_start(&self, s: &[char], greedy: bool) -> Option<usize> {
        let rev: Vec<char> = s.iter().rev().copied().collect();
        self.reversed()
            .prefix_end(&rev, greedy)
            .map(|len| s.len() - len)
    }

    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let s: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut pos = 0;
        let mut last_match_end: Option<usize> = None;
        while pos <= s.len() {
            let found = (pos..=s.len()).find_map(|start| {
                self.match_ends(&s, start)
                    .last()
                    .map(|&end| (start, end))
                    .filter(|&(st, e)| !(e == st && last_match_end == Some(st)))
            });
            let Some((start, end)) = found else { break };
            out.extend(&s[pos..start]);
            out.push_str(replacement);
            last_match_end = Some(end);
            if end == start {
                if let Some(&c) = s.get(end) {
                    out.push(c);
                }
                pos = end + 1;
            } else {
                pos = end;
            }
            if !all {
                break;
            }
        }
        if pos < s.len() {
            out.extend(&s[pos..]);
        }
        out
    }
}
