//! Files and functions stay small enough to read in one go: no file of
//! `host/src` or `config/src` over 600 lines and no function over 80,
//! test code aside (the `#[cfg(test)]` module that ends a file, and files
//! called `tests.rs`). A file's lines are counted up to its test module; a
//! function's from its `fn` line to its closing brace, comments and blank
//! lines included.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

#[test]
fn no_file_over_600_lines_and_no_function_over_80() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut over = Vec::new();
    for krate in ["host/src", "config/src"] {
        for file in rust_files(&workspace.join(krate)) {
            let name = file
                .strip_prefix(workspace)
                .unwrap()
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            let text = std::fs::read_to_string(&file).unwrap();
            over.extend(oversized(&name, &text));
        }
    }
    assert!(
        over.is_empty(),
        "over {MAX_FILE_LINES} lines per file or {MAX_FN_LINES} per function (split by concern):\n{}",
        over.iter()
            .map(|(what, n)| format!("  {what}: {n} lines"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What of one file is over a limit: `("file", lines)` and
/// `("file: fn name", lines)`.
fn oversized(name: &str, text: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    if name.ends_with("/tests.rs") {
        return out;
    }
    let code = code_only(text);
    let lines = code_lines(&code);
    if lines > MAX_FILE_LINES {
        out.push((name.to_owned(), lines));
    }
    let code: String = code.lines().take(lines).collect::<Vec<_>>().join("\n");
    for (function, n) in functions(&code) {
        if n > MAX_FN_LINES {
            out.push((format!("{name}: fn {function}"), n));
        }
    }
    out
}

/// The lines before the inline `#[cfg(test)] mod ... {` that ends a file
/// (a `mod tests;` is one line of the file).
fn code_lines(code: &str) -> usize {
    let lines: Vec<&str> = code.lines().collect();
    lines
        .windows(2)
        .position(|w| {
            w[0].trim() == "#[cfg(test)]"
                && w[1].trim_start().starts_with("mod ")
                && w[1].trim_end().ends_with('{')
        })
        .unwrap_or(lines.len())
}

/// Every `fn` item of `code` (comments and literals blanked) with its
/// length in lines, from the `fn` line to the closing brace.
fn functions(code: &str) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let line_of = |offset: usize| code[..offset].matches('\n').count();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = code[at..].find("fn ") {
        let start = at + found;
        at = start + 3;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let name: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !word_start || name.is_empty() {
            continue;
        }
        // The body opens at the first `{` unless a `;` ends a declaration
        // (a trait's method without a default) first.
        let Some(open) = code[at..].find(['{', ';']).map(|i| at + i) else {
            break;
        };
        if bytes[open] == b';' {
            continue;
        }
        let mut depth = 0usize;
        let mut close = None;
        for (i, b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        out.push((name, line_of(close) - line_of(start) + 1));
    }
    out
}

/// `text` with comments, string and character literals blanked (their
/// newlines kept), so that braces and `fn` are only the code's.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"..." or r#"..."#, as many `#` as opened it.
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            i += char_literal_len(&chars, i).unwrap_or(1);
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#` of a raw (byte) string opening at `i`.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let r = match chars.get(i) {
        Some('r') => i,
        Some('b') if chars.get(i + 1) == Some(&'r') => i + 1,
        _ => return None,
    };
    if prev_ident {
        return None;
    }
    let hashes = chars[r + 1..].iter().take_while(|c| **c == '#').count();
    (chars.get(r + 1 + hashes) == Some(&'"')).then_some(hashes + (r - i))
}

/// The length of a character literal at `i` (`'a'`, `'\n'`, `'\u{7f}'`),
/// `None` for a lifetime (`'a`).
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            let end = chars[i + 2..].iter().position(|c| *c == '\'')?;
            Some(end + 3)
        }
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(3),
    }
}

/// Every `.rs` file under `root`, sorted.
pub(crate) fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_size_check_counts_code_not_literals_or_tests() {
    let text = r##"
fn short() {
    let s = "}}}{ fn fake() {";
    let r = r#"{"a": "}"}"#;
    let c = '}';
    let l: &'static str = "x";
}

fn long() {
    // }
    /* { */
    a();
    b();
}

#[cfg(test)]
mod tests {
    fn huge() {
    }
}
"##;
    let code = code_only(text);
    let lines = code_lines(&code);
    assert_eq!(lines, 15);
    let code: String = code.lines().take(lines).collect::<Vec<_>>().join("\n");
    assert_eq!(
        functions(&code),
        vec![("short".to_owned(), 6), ("long".to_owned(), 6)]
    );
}
