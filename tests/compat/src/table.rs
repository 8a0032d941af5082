//! ctr's listings, read as tables: a header line naming the columns, one row per line, cells
//! aligned under their header (ctr pads with spaces or with tabs; tabs are expanded first).

use std::collections::BTreeMap;

/// One row: column name → cell text (trimmed).
pub type Row = BTreeMap<String, String>;

/// Expands tabs to the next multiple of 8, as a terminal shows them (ctr's tab-padded tables
/// align on those stops).
fn expand_tabs(line: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(line.len());
    for c in line.chars() {
        if c == '\t' {
            out.push(' ');
            while out.len() % 8 != 0 {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `out` as a table with the given columns (in the order they appear in the header).
/// Panics when the header lacks one of them: a changed listing must not pass unnoticed.
pub fn parse(out: &str, columns: &[&str]) -> Vec<Row> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        panic!("no table header in {out:?}");
    };
    let header = expand_tabs(header);
    let text: String = header.iter().collect();
    let mut starts = Vec::with_capacity(columns.len());
    let mut from = 0;
    for col in columns {
        let found = text[from..]
            .match_indices(col)
            .map(|(i, _)| from + i)
            .find(|&i| {
                let end = i + col.len();
                (i == 0 || header[i - 1] == ' ') && (end == header.len() || header[end] == ' ')
            })
            .unwrap_or_else(|| panic!("column {col:?} not in header {text:?}"));
        starts.push(found);
        from = found + col.len();
    }
    lines
        .map(|line| {
            let chars = expand_tabs(line);
            columns
                .iter()
                .enumerate()
                .map(|(i, col)| {
                    let start = starts[i].min(chars.len());
                    let end = starts
                        .get(i + 1)
                        .map_or(chars.len(), |&e| e.min(chars.len()));
                    let cell: String = chars[start..end].iter().collect();
                    ((*col).to_owned(), cell.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

/// A column of every row, in order.
pub fn column(rows: &[Row], col: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r.get(col).cloned().unwrap_or_default())
        .collect()
}

/// A `k=v,k=v` label cell in a canonical order (the servers' map order is not part of the
/// contract); `-` and the empty cell stay as they are.
pub fn labels(cell: &str) -> String {
    if cell.is_empty() || cell == "-" {
        return cell.to_owned();
    }
    let mut parts: Vec<&str> = cell.split(',').collect();
    parts.sort_unstable();
    parts.join(",")
}

/// Non-empty lines, trimmed (a `-q` listing).
pub fn quiet(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_padded_with_empty_cells_and_spaces_in_names() {
        let out = "KEY      PARENT   KIND      \n\
                   sha256:a          Committed \n\
                   c1       sha256:a Active    \n";
        let rows = parse(out, &["KEY", "PARENT", "KIND"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["KEY"], "sha256:a");
        assert_eq!(rows[0]["PARENT"], "");
        assert_eq!(rows[0]["KIND"], "Committed");
        assert_eq!(rows[1]["PARENT"], "sha256:a");
        let out = "ID CREATED AT           LABELS \nL1 2026-11-27T22:46:55Z a=b    \n";
        let rows = parse(out, &["ID", "CREATED AT", "LABELS"]);
        assert_eq!(rows[0]["CREATED AT"], "2026-11-27T22:46:55Z");
        assert_eq!(rows[0]["LABELS"], "a=b");
    }

    #[test]
    fn tab_padded() {
        let out = "DIGEST\t\t\tSIZE\tAGE\t\t\tLABELS\n\
                   sha256:0123456789abcdef\t1.0MB\tLess than a second\tb=2,a=1\n";
        let rows = parse(out, &["DIGEST", "SIZE", "AGE", "LABELS"]);
        assert_eq!(rows[0]["DIGEST"], "sha256:0123456789abcdef");
        assert_eq!(rows[0]["SIZE"], "1.0MB");
        assert_eq!(rows[0]["AGE"], "Less than a second");
        assert_eq!(labels(&rows[0]["LABELS"]), "a=1,b=2");
    }

    #[test]
    #[should_panic(expected = "not in header")]
    fn a_missing_column_fails() {
        parse("A B\n1 2\n", &["A", "C"]);
    }

    #[test]
    fn a_column_name_inside_another_is_not_taken() {
        let rows = parse("TASKID ID\nx      y\n", &["ID"]);
        assert_eq!(rows[0]["ID"], "y");
    }
}
