//! The textual IR: what snapshots store and what `dsc opt` reads and writes.
//!
//! ```text
//! # comments and blank lines are ignored
//! graph "tiny-moe"
//! policy keep_high=[embedding, head, gating, norm, attention] high=bf16 fp8_format=f8e4m3 act_tile=128 weight_block=128 promote_interval=128 scale_format=f32
//! override "model.layers.0.*" bf16
//! input %input_ids: i32[1, 64]
//! param @model.embed_tokens.weight: bf16[512, 256]
//! %embed: bf16[1, 64, 256] = embedding(%input_ids, @model.embed_tokens.weight) role=embedding
//! %n: bf16[1, 64, 256] = rms_norm(%embed, @w) {eps = 1e-6} role=norm compute=f32 accumulate=f32
//! %g: f32[64, 2], %g.indices: i32[64, 2] = moe_topk(%logits) {…} role=gating
//! output %logits
//! ```
//!
//! `%name` is an input or op result, `@name` a parameter; names outside `[A-Za-z0-9_.{}/-]`
//! are written quoted (`%"a b"`). An op's name is its first result's name. Attributes are
//! printed in name order; floats always carry a `.` or an exponent. The header lines come
//! first (`graph`, `policy`, then `override`s), then inputs, params, ops, outputs.

mod lex;
mod parse;
mod print;

pub use parse::{ParseError, parse};
pub use print::{is_bare_name, print, print_op};
