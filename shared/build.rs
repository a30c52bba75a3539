//! `cfg(direct_kernels)`: where nvnet's own CPU kernels (`nn::direct_conv`, `nn::layout`,
//! `nn::pointwise_conv`) are built, one definition for those modules and their callers: flex
//! natively on x86-64 (AVX2 and FMA, checked at run time; rayon comes with `autodiff`), and in
//! the page's wasm with SIMD.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(direct_kernels)");
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let simd128 = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|f| f == "simd128");
    let native = feature("AUTODIFF") && arch == "x86_64";
    let page = arch == "wasm32" && simd128;
    if feature("FLEX") && (native || page) {
        println!("cargo::rustc-cfg=direct_kernels");
    }
}
