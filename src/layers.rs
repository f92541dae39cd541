//! The layers, as a test: a module names only modules of lower layers (or, among the
//! mechanisms, the few it is declared to use), so `src/` has no import cycle and a newcomer
//! can tell where a change belongs. docs/design.md draws the same picture.

/// Lowest first. Every top-level module under src/ must be in exactly one layer.
const LAYERS: &[(&str, &[&str])] = &[
    ("PostgreSQL glue", &["postgres"]),
    ("catalog and settings", &["catalog", "settings"]),
    (
        "mechanisms",
        &[
            "check", "report", "purge", "worker", "capture", "key_type", "adopt",
        ],
    ),
    ("SQL API", &["api"]),
];

/// Among the mechanisms, who uses whom: the capture wakes the worker, the worker runs the
/// purge. Nothing else.
const MECHANISM_USES: &[(&str, &str)] = &[("capture", "worker"), ("worker", "purge")];

/// Modules that are not layers: the wiring, and the tests.
const OUTSIDE_LAYERS: &[&str] = &["lib", "layers", "pg_tests"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The top-level module a source file belongs to: src/purge/batch.rs -> purge.
fn module_of(path: &std::path::Path, src: &std::path::Path) -> String {
    let relative = path.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The top-level modules `source` names as `crate::name` or `crate::{a, b::c}`.
fn crate_modules_named(source: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (at, _) in source.match_indices("crate::") {
        let rest = &source[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    named.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.push(name);
        }
    }
    named
}

fn sources(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Every (module, module it names) in src/.
fn imports() -> Vec<(String, String, std::path::PathBuf)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let module = module_of(&file, &src);
        let source = std::fs::read_to_string(&file).unwrap();
        for named in crate_modules_named(&source) {
            if named != module {
                found.push((module.clone(), named, file.clone()));
            }
        }
    }
    found
}

#[test]
fn every_module_belongs_to_one_layer() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let module = module_of(&file, &src);
        let layers = LAYERS
            .iter()
            .filter(|(_, modules)| modules.contains(&module.as_str()))
            .count();
        assert!(
            layers == 1 || OUTSIDE_LAYERS.contains(&module.as_str()),
            "{} (module {module}) is in {layers} layers: add it to LAYERS in src/layers.rs",
            file.display()
        );
    }
}

#[test]
fn no_module_names_a_module_of_its_own_or_a_higher_layer() {
    let mut violations = Vec::new();
    for (module, named, file) in imports() {
        if OUTSIDE_LAYERS.contains(&module.as_str()) {
            continue;
        }
        let (Some(from), Some(to)) = (layer_of(&module), layer_of(&named)) else {
            violations.push(format!(
                "{}: names crate::{named}, which is in no layer",
                file.display()
            ));
            continue;
        };
        let allowed = to < from
            || (from == to && MECHANISM_USES.contains(&(module.as_str(), named.as_str())));
        if !allowed {
            violations.push(format!(
                "{} ({}, layer \"{}\") names crate::{named} (layer \"{}\")",
                file.display(),
                module,
                LAYERS[from].0,
                LAYERS[to].0
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "upward or sideways imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_finds_grouped_and_nested_imports() {
    assert_eq!(
        crate_modules_named(
            "use crate::{capture, check::Plan, report};\nlet x = crate::purge::run();"
        ),
        ["capture", "check", "report", "purge"]
    );
}
