//! carve-web: the browser face of carve. A leptos client-side app that loads a model (URL, files,
//! or a share link), runs it with carve-core's wgpu backend on WebGPU (the CPU backend compiled to
//! wasm where WebGPU is missing), draws the circuit, toggles components (or a standalone edge
//! model's edges) and makes share links.

pub mod edge_view;
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
mod drop;
#[cfg(target_arch = "wasm32")]
mod edge_graph;
#[cfg(target_arch = "wasm32")]
mod graph;
#[cfg(target_arch = "wasm32")]
mod load;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
