//! Docker's tables: columns as wide as their widest cell, three spaces apart (Go's tabwriter
//! as the docker CLI sets it up), the last column unpadded.

use std::io::Write;

/// Writes `rows` (the header first) as an aligned table.
pub fn write(out: &mut impl Write, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                line += &format!("{cell:<w$}   ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_like_dockers_tabwriter() {
        let mut out = vec![];
        super::write(
            &mut out,
            &[
                vec!["A".into(), "LONG HEADER".into(), "Z".into()],
                vec!["wide value".into(), "x".into(), "last".into()],
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A            LONG HEADER   Z\nwide value   x             last\n"
        );
    }
}
