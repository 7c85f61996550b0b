//! Front-end speed on the DeepSeek-V3-shaped example: model.toml parse + preset expansion +
//! the default pass pipeline, timed per stage, and its growth with the layer count.
//!
//! `cargo bench --bench compile` (release build). Target: under 200 ms for all 61 layers
//! on a 2-core machine, linear in layers.

use dsc_ir::model::load_model;
use dsc_passes::{PassOptions, Pipeline};
use std::time::{Duration, Instant};

const ITERS: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median times of (expand, passes) and the op count, for `source`.
fn measure(source: &str) -> (Duration, Duration, usize) {
    let options = PassOptions { verify_each: false };
    let pipeline = Pipeline::default_pipeline();
    let (mut expand, mut passes, mut ops) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ITERS {
        let t = Instant::now();
        let mut g = load_model(source).expect("the example loads");
        expand.push(t.elapsed());
        let t = Instant::now();
        pipeline
            .run(&mut g, &options, |_, _| {})
            .expect("the pipeline runs");
        passes.push(t.elapsed());
        ops = g.ops.len();
    }
    (median(expand), median(passes), ops)
}

fn main() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deepseek-v3.toml");
    let source = std::fs::read_to_string(path).expect("examples/deepseek-v3.toml");
    println!("deepseek-v3 front end, median of {ITERS} runs (parse+expand | passes | total)");
    for layers in [8, 16, 32, 61] {
        let text = source.replace("n_layers = 61", &format!("n_layers = {layers}"));
        assert!(
            layers == 61 || text != source,
            "n_layers = 61 not found in the example"
        );
        let (e, p, ops) = measure(&text);
        let total = e + p;
        println!(
            "  {layers:>2} layers {ops:>5} ops: {:>7.2} ms | {:>7.2} ms | {:>7.2} ms ({:.3} ms/layer)",
            e.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3 / layers as f64
        );
    }
}
