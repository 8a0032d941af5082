//! The low level parser: the Dockerfile's text to one [`Node`] per instruction, the way
//! BuildKit's parser builds its tree (line continuations, comments, parser directives, JSON
//! forms, `--flags`, heredocs), and its s-expression dump.

use crate::error::Error;
use crate::lex::{LexOptions, Lexer};

/// The parsed Dockerfile, BuildKit-style: its parser directives and one node per instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    /// The parser directives found at the top of the file.
    pub directives: Directives,
    /// The instructions, in order.
    pub nodes: Vec<Node>,
}

/// Parser directives (`# escape=…`, `# syntax=…`) from the top of a Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Directives {
    /// The escape character: `\` (the default) or `` ` ``.
    pub escape: char,
    /// The `# syntax=` directive's value, if any.
    pub syntax: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
        }
    }
}

/// One instruction as BuildKit's parser holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The keyword, lower-cased: `from`, `run`, ...
    pub keyword: String,
    /// The leading `--flags` as written (`--from=builder`, `--chown=1:1`), quotes removed.
    pub flags: Vec<String>,
    /// The arguments as BuildKit's tree holds them: for ENV and LABEL triples of key, value and
    /// separator (`"="`, or `""` for the old `ENV key value` form); for JSON forms the array's
    /// strings; for shell forms of RUN/CMD/ENTRYPOINT/SHELL one string; for HEALTHCHECK the type
    /// then the command; for ONBUILD the trigger instruction's text (its flags removed).
    pub args: Vec<String>,
    /// Whether the arguments were written in exec (JSON array) form.
    pub json: bool,
    /// The instruction as written, continuation lines joined (escape characters and the line
    /// ends removed, comments inside continuations dropped), leading whitespace removed.
    pub original: String,
    /// The first line of the instruction (1-based).
    pub start_line: usize,
    /// The last line of the instruction, heredoc bodies included (1-based).
    pub end_line: usize,
    /// The heredocs (`<<EOF`) the instruction carries (RUN, COPY, ADD, and those in ONBUILD).
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Heredoc {
    /// The terminator word (quotes removed): `EOF`.
    pub name: String,
    /// The body, every line with its line ending, the terminator line excluded.
    pub content: String,
    /// Whether variables in the body are to be expanded (the word was not quoted).
    pub expand: bool,
    /// Whether it was `<<-`: leading tabs are stripped from the body and the terminator line.
    pub chomp: bool,
}

impl Heredoc {
    /// The content with leading tabs removed from every line when `chomp` (`<<-`) is set.
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

impl Ast {
    /// The tree in BuildKit's dump format: one `(keyword ["--flag"] "arg" ...)` line per
    /// instruction, lines joined by `"\n"`.
    pub fn dump(&self) -> String {
        let lines: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("({})", dump_node(n, self.directives.escape)))
            .collect();
        lines.join("\n")
    }
}

fn dump_node(node: &Node, escape: char) -> String {
    let mut s = node.keyword.to_lowercase();
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if node.keyword == "onbuild" {
        if let Some(trigger) = node.args.first() {
            let d = DirectiveState::with_escape(escape);
            match new_node_from_line(trigger, &d, node.start_line) {
                Ok(child) => s.push_str(&format!(" ({})", dump_node(&child, escape))),
                Err(_) => s.push_str(&format!(" {}", go_quote(trigger))),
            }
        }
        return s.trim().to_string();
    }
    for a in &node.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s.trim().to_string()
}

/// Quotes a string the way Go's `strconv.Quote` does.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if is_go_printable(c) => out.push(c),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols
/// and the ASCII space.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = u32::from(c);
    !matches!(u,
        0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff
        | 0xfff9..=0xfffb | 0xe000..=0xf8ff | 0xf0000..=0x10ffff)
}

/// The parser directive state, as the top of the file is read.
pub(crate) struct DirectiveState {
    escape: char,
    syntax: Option<String>,
    seen: Vec<String>,
    done: bool,
}

impl DirectiveState {
    fn new() -> Self {
        Self::with_escape('\\')
    }

    pub(crate) fn with_escape(escape: char) -> Self {
        DirectiveState {
            escape,
            syntax: None,
            seen: Vec::new(),
            done: false,
        }
    }

    /// Looks at one (left-trimmed) line for a directive; once a line is not one, no later line
    /// is.
    fn parse_line(&mut self, line: &str) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(());
        };
        let rest = rest.trim_start();
        let Some((key, value)) = match_directive(rest) else {
            self.done = true;
            return Ok(());
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(());
        }
        if self.seen.contains(&key) {
            return Err(format!("only one {key} parser directive can be used"));
        }
        self.seen.push(key.clone());
        match key.as_str() {
            "escape" => match value.as_str() {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => {
                    return Err(format!(
                        "invalid escape token '{value}' does not match ` or \\"
                    ));
                }
            },
            "syntax" => self.syntax = Some(value),
            _ => {}
        }
        Ok(())
    }

    /// Removes a line continuation (the escape character as the last character but spaces and
    /// tabs, not itself escaped); returns the line and whether the instruction ends here.
    fn trim_continuation(&self, line: &str) -> (String, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(self.escape) {
            match before.chars().last() {
                None => return (String::new(), false),
                Some(c) if c != self.escape => return (before.to_string(), false),
                Some(_) => {}
            }
        }
        (line.to_string(), true)
    }
}

/// `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` by hand (`\s` being ASCII white space).
fn match_directive(s: &str) -> Option<(String, String)> {
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}');
    let mut chars = s.char_indices().peekable();
    let first = chars.next()?;
    if !first.1.is_ascii_alphabetic() {
        return None;
    }
    let mut end = first.1.len_utf8();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_ascii_alphanumeric() {
            end = i + c.len_utf8();
            chars.next();
        } else {
            break;
        }
    }
    let key = &s[..end];
    let rest = s[end..].trim_start_matches(is_ws);
    let rest = rest.strip_prefix('=')?;
    if rest.contains('\n') {
        return None;
    }
    let trimmed = rest.trim_matches(is_ws);
    if !trimmed.is_empty() {
        return Some((key.to_string(), trimmed.to_string()));
    }
    // `.+?` needs one character: the regexp gives it one of the spaces.
    rest.chars()
        .next()
        .map(|c| (key.to_string(), c.to_string()))
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Parses a Dockerfile into BuildKit's node tree.
///
/// Refuses what BuildKit's parser refuses (no instruction at all, `ENV name` without a value,
/// JSON arrays holding something else than strings, bad directives, unterminated heredocs)
/// and, unlike it, unknown instructions.
pub fn parse_ast(text: &str) -> Result<Ast, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut d = DirectiveState::new();
    let mut nodes = Vec::new();
    let mut i = 0;
    let mut current_line = 0;
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        let processed = process_line(&mut d, raw, true, current_line + 1)?;
        current_line += 1;
        let start_line = current_line;
        let (mut line, mut end) = d.trim_continuation(&processed);
        if end && line.is_empty() {
            continue;
        }
        while !end && i < lines.len() {
            let raw = lines[i];
            i += 1;
            let processed = process_line(&mut d, raw, false, current_line + 1)?;
            current_line += 1;
            if is_comment(raw) {
                continue;
            }
            if trim_newline(&processed).trim_start().is_empty() {
                continue;
            }
            let (l, e) = d.trim_continuation(&processed);
            line.push_str(&l);
            end = e;
        }
        let mut node = new_node_from_line(&line, &d, start_line)?;
        if can_contain_heredoc(&node, &d) && line.contains("<<") {
            let docs = heredocs_from_line(&line)
                .map_err(|m| Error::instruction(start_line, &node.keyword, m))?;
            for mut doc in docs {
                let mut terminated = false;
                let mut content = String::new();
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    current_line += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    content.push_str(raw);
                }
                if !terminated {
                    return Err(Error::instruction(
                        start_line,
                        &node.keyword,
                        format!("unterminated heredoc {}", doc.name),
                    ));
                }
                doc.content = content;
                node.heredocs.push(doc);
            }
        }
        node.end_line = current_line;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Error::NoInstructions { line: current_line });
    }
    Ok(Ast {
        directives: Directives {
            escape: d.escape,
            syntax: d.syntax,
        },
        nodes,
    })
}

fn process_line(
    d: &mut DirectiveState,
    raw: &str,
    strip_left: bool,
    line_no: usize,
) -> Result<String, Error> {
    let mut token = trim_newline(raw);
    if strip_left {
        token = token.trim_start();
    }
    d.parse_line(token).map_err(|message| Error::Directive {
        line: line_no,
        message,
    })?;
    if is_comment(token) {
        Ok(String::new())
    } else {
        Ok(token.to_string())
    }
}

fn can_contain_heredoc(node: &Node, d: &DirectiveState) -> bool {
    let (keyword, json) = if node.keyword == "onbuild" {
        match node
            .args
            .first()
            .and_then(|t| new_node_from_line(t, d, node.start_line).ok())
        {
            Some(child) => (child.keyword, child.json),
            None => return false,
        }
    } else {
        (node.keyword.clone(), node.json)
    };
    matches!(keyword.as_str(), "add" | "copy" | "run") && !json
}

/// `[\t\v\f\r ]`, Go's `reWhitespace`.
fn is_split_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]` like Go's `regexp.Split(s, n)` (n < 0: all).
fn split_ws(s: &str, n: Option<usize>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if let Some(n) = n
            && out.len() + 1 == n
        {
            out.push(rest.to_string());
            return out;
        }
        match rest.find(is_split_ws) {
            Some(start) => {
                out.push(rest[..start].to_string());
                let after = &rest[start..];
                let skip = after.len() - after.trim_start_matches(is_split_ws).len();
                rest = &after[skip..];
            }
            None => {
                out.push(rest.to_string());
                return out;
            }
        }
    }
}

pub(crate) fn new_node_from_line(
    line: &str,
    d: &DirectiveState,
    start_line: usize,
) -> Result<Node, Error> {
    let trimmed = line.trim();
    let parts = split_ws(trimmed, Some(2));
    let cmd = parts.first().cloned().unwrap_or_default();
    let (rest, flags) = match parts.get(1) {
        Some(r) => extract_builder_flags(r, d.escape),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_string();
    let keyword = cmd.to_lowercase();
    let err = |m: String| Error::instruction(start_line, &keyword, m);
    let (args, json): (Vec<String>, bool) = match keyword.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(&rest).map_err(err)?,
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(&rest).map_err(err)?,
        "arg" => (parse_words(&rest, d.escape), false),
        "env" | "label" => (
            parse_name_val(&rest, &keyword.to_uppercase(), d.escape).map_err(err)?,
            false,
        ),
        "expose" | "from" => (parse_strings_ws(&rest), false),
        "healthcheck" => parse_health_config(&rest).map_err(err)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            (if rest.is_empty() { vec![] } else { vec![rest] }, false)
        }
        "onbuild" => {
            if rest.is_empty() {
                (vec![], false)
            } else {
                // Validate the trigger now; the dump parses it again.
                new_node_from_line(&rest, d, start_line)?;
                (vec![rest], false)
            }
        }
        _ => {
            return Err(Error::UnknownInstruction {
                line: start_line,
                instruction: cmd.to_uppercase(),
            });
        }
    };
    Ok(Node {
        keyword,
        flags,
        args,
        json,
        original: line.to_string(),
        start_line,
        end_line: start_line,
        heredocs: Vec::new(),
    })
}

/// Takes the leading `--flag` words off an instruction's arguments (quotes and escapes
/// processed in them); a `--` word ends the flags.
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = chars.get(pos).map(|&(_, c)| c).unwrap_or('\0');
        let offset = chars.get(pos).map(|&(o, _)| o).unwrap_or(line.len());
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            let next = chars.get(pos + 1).map(|&(_, c)| c);
            if ch != '-' || next != Some('-') {
                return (line[offset..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[offset..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars.get(pos).map(|&(_, c)| c).unwrap_or('\0');
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == escape {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars.get(pos).map(|&(_, c)| c).unwrap_or('\0');
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// Splits into words on white space, honouring quotes and escapes but keeping them in the
/// words (they are removed later, when the words are expanded).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars.get(pos).copied().unwrap_or('\0');
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars.get(pos).copied().unwrap_or('\0');
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// ENV and LABEL: `key value` (old form, one pair, the value the rest of the line) or
/// `key=value ...`; returns triples key, value, separator.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(vec![]);
    };
    if !first.contains('=') {
        let parts = split_ws(rest, Some(2));
        return match (parts.first(), parts.get(1)) {
            (Some(k), Some(v)) => Ok(vec![k.clone(), v.clone(), String::new()]),
            _ => Err(format!("{key} must have two arguments")),
        };
    }
    let mut out = Vec::new();
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                go_quote(word)
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

fn parse_strings_ws(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return vec![];
    }
    split_ws(rest, None)
}

enum JsonOutcome {
    Strings(Vec<String>),
    NotJson,
    NotStringArray,
}

fn parse_json(rest: &str) -> JsonOutcome {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonOutcome::NotJson;
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return JsonOutcome::NotJson;
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match v {
            serde_json::Value::String(s) => out.push(s),
            _ => return JsonOutcome::NotStringArray,
        }
    }
    JsonOutcome::Strings(out)
}

const NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((vec![], false));
    }
    match parse_json(rest) {
        JsonOutcome::Strings(v) => Ok((v, true)),
        JsonOutcome::NotStringArray => Err(NOT_STRING_ARRAY.to_string()),
        JsonOutcome::NotJson => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest) {
        JsonOutcome::Strings(v) => Ok((v, true)),
        JsonOutcome::NotStringArray => Err(NOT_STRING_ARRAY.to_string()),
        JsonOutcome::NotJson => Ok((parse_strings_ws(rest), false)),
    }
}

fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((vec![], false));
    }
    let typ = &rest[..sep];
    let after = rest[sep..].trim_start();
    let (mut cmd, json) = parse_maybe_json(after)?;
    let mut args = vec![typ.to_string()];
    args.append(&mut cmd);
    Ok((args, json))
}

/// Finds the heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`) a line opens.
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let none = |_: &str| None;
    let opts = LexOptions {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
    };
    let words = Lexer::new('\\', opts, &none)
        .process_words(line)
        .unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_heredoc(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Whether a word is a heredoc marker (`<<EOF`), and which.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    // ^(\d*)<<(-?)\s*([^<]*)$
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\u{c}']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let none = |_: &str| None;
    let plain = LexOptions {
        raw_quotes: false,
        raw_escapes: false,
        skip_unset_env: true,
    };
    let words = Lexer::new('\\', plain, &none).process_words(rest)?;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = LexOptions {
        raw_quotes: true,
        ..plain
    };
    let raw_words = Lexer::new('\\', raw, &none).process_words(rest)?;
    let [raw_name] = raw_words.as_slice() else {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: name.clone(),
        content: String::new(),
        expand: quotes(name) == quotes(raw_name),
        chomp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\\c\n\u{0}"), "\"a\\\"b\\\\c\\n\\x00\"");
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(go_quote("\u{a0}"), "\"\\u00a0\"");
    }

    #[test]
    fn flags_extracted() {
        let (rest, flags) = extract_builder_flags("--a=1 --b=\"x y\" -- --c foo", '\\');
        assert_eq!(flags, vec!["--a=1", "--b=x y"]);
        assert_eq!(rest, " --c foo");
        let (rest, flags) = extract_builder_flags("--only", '\\');
        assert_eq!(flags, vec!["--only"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn directive_regexp() {
        assert_eq!(
            match_directive("escape = `"),
            Some(("escape".into(), "`".into()))
        );
        assert_eq!(
            match_directive("escape=  "),
            Some(("escape".into(), " ".into()))
        );
        assert_eq!(match_directive("Comment here. Should"), None);
    }

    #[test]
    fn heredoc_words() {
        let h = parse_heredoc("<<-\"EOF\"").ok().flatten();
        assert_eq!(
            h.map(|h| (h.name, h.expand, h.chomp)),
            Some(("EOF".into(), false, true))
        );
        let h = parse_heredoc("<<EOF").ok().flatten();
        assert_eq!(h.map(|h| (h.name, h.expand)), Some(("EOF".into(), true)));
        assert!(matches!(parse_heredoc("<<"), Ok(None)));
        assert!(matches!(parse_heredoc("a<<b"), Ok(None)));
    }
}
