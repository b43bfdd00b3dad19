//! Documentation that restates the interface must agree with the code.

use std::collections::BTreeMap;
use vouch::exit::ExitCode;

/// Rows `| N | NAME | ... |` of the first table that has them.
fn exit_table(text: &str) -> BTreeMap<u8, String> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let n = cells.get(1)?.parse::<u8>().ok()?;
            let name = cells.get(2)?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
                .then(|| (n, name.to_string()))
        })
        .collect()
}

#[test]
fn the_readme_exit_table_matches_the_enum() {
    let readme = include_str!("../README.md");
    let table = exit_table(readme);
    let code: BTreeMap<u8, String> = ExitCode::ALL
        .iter()
        .map(|c| (c.code(), c.name().to_owned()))
        .collect();
    assert_eq!(table, code);
}
