//! Every training config shipped in `configs/` parses, passes validation and loads its data
//! (robustness and continual experiment configs have their own formats and tests).

use meta_nca_rule::config::Config;
use meta_nca_rule::experiment::Experiment;

#[test]
fn shipped_training_configs_are_valid() {
    let dir = meta_nca_tests::root().join("configs");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".toml")
            || name.starts_with("robustness-")
            || name == "continual-class.toml"
            || name == "continual-drift.toml"
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        Experiment::new(config).unwrap_or_else(|e| panic!("{name}: {e}"));
        checked.push(name);
    }
    assert!(checked.len() >= 12, "only {checked:?}");
}
