use pql_engine::Definition;

#[test]
fn the_shipped_example_definition_is_valid() {
    let source = include_str!("../../../examples/definition.toml");
    let definition =
        Definition::from_toml("examples/definition.toml", source).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(definition.milestones.len(), 7);
    assert!(definition.version.starts_with('v'));
}
