//! Helpers shared by the emulator's validation tests: small handwritten PTX kernels run over
//! host buffers.
//!
//! Set `DSC_DUMP_PTX=<dir>` to write every kernel the tests build to `<dir>` (to check them
//! with `ptxas -arch=sm_90a`).

#![allow(dead_code)]

use dsc_emulator::{
    EmuError, GlobalMemory, LaunchConfig, LaunchOptions, LaunchProfile, Module, ParamValue, launch,
};

/// Threads per CTA of [`elementwise`] launches.
pub const BLOCK: u32 = 128;

/// Writes `ptx` to `$DSC_DUMP_PTX/<name>.ptx` when the variable is set.
pub fn dump(name: &str, ptx: &str) {
    if let Ok(dir) = std::env::var("DSC_DUMP_PTX") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/{name}.ptx"), ptx).unwrap();
    }
}

/// A module of one kernel `k` (target sm_90a) with `params` (`.param` declarations) and the
/// instructions `body`; `regs` declares its registers.
pub fn kernel(params: &str, regs: &str, body: &str) -> String {
    format!(
        ".version 8.4\n.target sm_90a\n.address_size 64\n\n.visible .entry k({params})\n{{\n{regs}\n{body}\n}}\n"
    )
}

/// A kernel in which thread `i` of the grid (while `i < n`) runs `body` with `%in<j>` holding
/// the global address of element `i` of input `j` (element size `ins[j]` bytes) and `%out<j>`
/// that of element `i` of output `j` (size `outs[j]`). `regs` declares the body's registers
/// (`%r`, `%rd`, `%p` are taken).
pub fn elementwise(ins: &[u32], outs: &[u32], regs: &str, body: &str) -> String {
    let mut params = Vec::new();
    let mut setup = String::new();
    for (j, size) in ins.iter().enumerate() {
        params.push(format!(".param .u64 in{j}"));
        setup += &format!(
            "\tld.param.u64 %in{j}, [in{j}];\n\tcvta.to.global.u64 %in{j}, %in{j};\n\
             \tmul.wide.u32 %rd1, %r4, {size};\n\tadd.s64 %in{j}, %in{j}, %rd1;\n"
        );
    }
    for (j, size) in outs.iter().enumerate() {
        params.push(format!(".param .u64 out{j}"));
        setup += &format!(
            "\tld.param.u64 %out{j}, [out{j}];\n\tcvta.to.global.u64 %out{j}, %out{j};\n\
             \tmul.wide.u32 %rd1, %r4, {size};\n\tadd.s64 %out{j}, %out{j}, %rd1;\n"
        );
    }
    params.push(".param .u32 n".into());
    let regs = format!(
        "\t.reg .pred %p<2>;\n\t.reg .b32 %r<6>;\n\t.reg .b64 %rd<2>;\n\
         \t.reg .b64 %in<{}>;\n\t.reg .b64 %out<{}>;\n{regs}",
        ins.len().max(1),
        outs.len().max(1)
    );
    let body = format!(
        "\tmov.u32 %r1, %ctaid.x;\n\tmov.u32 %r2, %ntid.x;\n\tmov.u32 %r3, %tid.x;\n\
         \tmad.lo.s32 %r4, %r1, %r2, %r3;\n\tld.param.u32 %r5, [n];\n\
         \tsetp.ge.u32 %p1, %r4, %r5;\n\t@%p1 bra DONE;\n{setup}{body}\nDONE:\n\tret;"
    );
    kernel(&params.join(", "), &regs, &body)
}

/// Runs an [`elementwise`] kernel over `n` elements: `inputs` copied in, outputs of
/// `out_sizes[j] * n` bytes returned.
pub fn run_elementwise(
    name: &str,
    ptx: &str,
    n: u32,
    inputs: &[&[u8]],
    out_sizes: &[u32],
) -> Vec<Vec<u8>> {
    dump(name, ptx);
    let module = Module::parse(ptx).unwrap_or_else(|e| panic!("{name}: {e}\n{ptx}"));
    let mut memory = GlobalMemory::new();
    let mut params = Vec::new();
    for data in inputs {
        let a = memory.allocate(data.len() as u64);
        memory.write(a, data).unwrap();
        params.push(ParamValue::U64(a));
    }
    let mut outs = Vec::new();
    for size in out_sizes {
        let bytes = u64::from(size * n);
        let a = memory.allocate(bytes);
        outs.push((a, bytes));
        params.push(ParamValue::U64(a));
    }
    params.push(ParamValue::U32(n));
    let config = LaunchConfig::new([n.div_ceil(BLOCK), 1, 1], [BLOCK, 1, 1]);
    launch(
        &module,
        "k",
        &memory,
        &config,
        &params,
        &LaunchOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    outs.iter()
        .map(|&(a, bytes)| {
            let mut v = vec![0u8; bytes as usize];
            memory.read(a, &mut v).unwrap();
            v
        })
        .collect()
}

/// Runs kernel `k` of `ptx` with one block of `block` threads over buffers: each of `buffers`
/// is allocated and initialised, and passed (as a `.u64` address) in order; `extra` follow.
/// Returns the buffers' final contents, or the emulator's error.
pub fn run_block(
    name: &str,
    ptx: &str,
    block: [u32; 3],
    buffers: &[Vec<u8>],
    extra: &[ParamValue],
    options: &LaunchOptions,
) -> Result<(Vec<Vec<u8>>, LaunchProfile), EmuError> {
    run_block_with(name, ptx, block, buffers, |_| extra.to_vec(), options)
}

/// [`run_block`] whose extra parameters depend on the buffers' global addresses (`extra`
/// gets them in order): e.g. a tensor map over one of the buffers.
pub fn run_block_with(
    name: &str,
    ptx: &str,
    block: [u32; 3],
    buffers: &[Vec<u8>],
    extra: impl FnOnce(&[u64]) -> Vec<ParamValue>,
    options: &LaunchOptions,
) -> Result<(Vec<Vec<u8>>, LaunchProfile), EmuError> {
    dump(name, ptx);
    let module = Module::parse(ptx).unwrap_or_else(|e| panic!("{name}: {e}\n{ptx}"));
    let mut memory = GlobalMemory::new();
    let mut params = Vec::new();
    let mut addrs = Vec::new();
    for data in buffers {
        let a = memory.allocate(data.len() as u64);
        memory.write(a, data).unwrap();
        params.push(ParamValue::U64(a));
        addrs.push(a);
    }
    params.extend(extra(&addrs));
    let config = LaunchConfig::new([1, 1, 1], block);
    let profile = launch(&module, "k", &memory, &config, &params, options)?;
    let out = addrs
        .iter()
        .zip(buffers)
        .map(|(&a, data)| {
            let mut v = vec![0u8; data.len()];
            memory.read(a, &mut v).unwrap();
            v
        })
        .collect();
    Ok((out, profile))
}

/// Little-endian bytes of `u32`s.
pub fn bytes_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes of `u16`s.
pub fn bytes_u16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `u32`s of little-endian bytes.
pub fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `u16`s of little-endian bytes.
pub fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// A small deterministic generator (xorshift64*), so that tests need no extra crates.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
