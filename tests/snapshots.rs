//! IR snapshots after each pass of the default pipeline, for every small example, and the
//! text round trip (`print(parse(text)) == text`) of every snapshot.

use crate::support::{read, small_examples};
use dsc_ir::model::load_model;
use dsc_ir::text::parse;
use dsc_passes::{PassOptions, Pipeline};

#[test]
fn ir_after_each_pass() {
    let options = PassOptions { verify_each: true };
    for (name, file) in small_examples() {
        let mut graph = load_model(&read(&file)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expanded = graph.to_string();
        assert_round_trip(name, "expand", &expanded);
        insta::assert_snapshot!(format!("{name}__0_expand"), expanded);
        let pipeline = Pipeline::default_pipeline();
        for (i, pass) in pipeline.passes.iter().enumerate() {
            let one = Pipeline { passes: vec![pass] };
            one.run(&mut graph, &options, |_, _| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = graph.to_string();
            assert_round_trip(name, pass.name, &text);
            insta::assert_snapshot!(format!("{name}__{}_{}", i + 1, pass.name), text);
        }
    }
}

fn assert_round_trip(model: &str, pass: &str, text: &str) {
    let parsed = parse(text).unwrap_or_else(|e| panic!("{model} after {pass}: {e}"));
    dsc_ir::verify(&parsed).unwrap_or_else(|e| panic!("{model} after {pass}: {e}"));
    assert_eq!(
        parsed.to_string(),
        text,
        "{model} after {pass}: round trip differs"
    );
}
