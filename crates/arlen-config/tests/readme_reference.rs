//! The README's configuration reference is generated from the key registry;
//! this test fails when they drift. `UPDATE_README=1 cargo test -p arlen-config
//! --test readme_reference` rewrites the table between the markers.

const BEGIN: &str = "<!-- config-reference:begin (generated from crates/arlen-config/src/registry.rs) -->\n";
const END: &str = "<!-- config-reference:end -->";

#[test]
fn readme_reference_table_matches_the_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme.find(BEGIN).expect("README has the config-reference begin marker") + BEGIN.len();
    let end = readme[start..].find(END).expect("README has the config-reference end marker") + start;
    let expected = arlen_config::reference_markdown();
    if readme[start..end] != expected && std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(&path, format!("{}{}{}", &readme[..start], expected, &readme[end..])).unwrap();
        return;
    }
    assert_eq!(readme[start..end], expected, "README config reference is stale; run with UPDATE_README=1");
}
