//! The README's claims that can drift from the code are checked here.

use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md")
}

/// The list to paste into Stripe's dashboard is the routing table's, verbatim.
#[test]
fn the_readme_lists_exactly_the_routed_event_types() {
    let output = Command::new(env!("CARGO_BIN_EXE_billing"))
        .arg("event-types")
        .output()
        .expect("run billing event-types");
    let printed = String::from_utf8(output.stdout).unwrap();
    let readme = readme();
    let start = readme.find("<!-- event-types -->").expect("marker") + "<!-- event-types -->".len();
    let block = &readme[start..readme[start..].find("<!-- /event-types -->").expect("end marker") + start];
    let listed: Vec<&str> = block
        .lines()
        .map(|l| l.trim().trim_matches('`'))
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .collect();
    assert_eq!(listed, printed.lines().collect::<Vec<_>>());
}

/// Every variable of the configuration contract the code reads is documented: the names are
/// collected from the source, so a new variable without a README line fails here.
#[test]
fn the_readme_documents_every_configuration_variable() {
    let readme = readme();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut variables = std::collections::BTreeSet::new();
    for dir in ["shared/src", "functions", "cli/src"] {
        collect_variables(&std::path::Path::new(root).join(dir), &mut variables);
    }
    assert!(variables.len() >= 17, "the scan found too few variables: {variables:?}");
    // Read by the AWS SDK or clap rather than through `Env`.
    variables.extend(["AWS_ENDPOINT_URL", "AWS_REGION", "PORT"].map(String::from));
    for variable in variables {
        assert!(
            readme.contains(&format!("`{variable}`")),
            "{variable} is not documented in README.md"
        );
    }
}

fn collect_variables(dir: &std::path::Path, found: &mut std::collections::BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_variables(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            for call in ["require(\"", "get(\"", "parse_u64(\"", "parse_bool(\""] {
                for (at, _) in source.match_indices(call) {
                    let name: String = source[at + call.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if name.len() > 3 && source[at + call.len() + name.len()..].starts_with('"') {
                        found.insert(name);
                    }
                }
            }
        }
    }
}
