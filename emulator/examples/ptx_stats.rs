//! Parses PTX files and prints, per kernel, its instruction count and the opcodes the
//! emulator does not implement: `cargo run -p dsc-emulator --example ptx_stats -- FILE.ptx…`.

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {path}: {e}");
                failed = true;
                continue;
            }
        };
        match dsc_emulator::Module::parse(&text) {
            Err(e) => {
                eprintln!("error: {path}: {e}");
                failed = true;
            }
            Ok(m) => {
                for k in &m.kernels {
                    let mut unsupported: Vec<&str> = k
                        .insts
                        .iter()
                        .filter(|i| matches!(i.op, dsc_emulator::ptx::decode::Op::Unsupported))
                        .map(|i| i.opcode.as_str())
                        .collect();
                    unsupported.sort();
                    unsupported.dedup();
                    println!(
                        "{path}: {} ({} instructions, {} registers) unsupported: {unsupported:?}",
                        k.name,
                        k.insts.len(),
                        k.reg_names.len()
                    );
                }
            }
        }
    }
    std::process::exit(i32::from(failed));
}
