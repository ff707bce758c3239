//! What a drop hands over: loose files, or folders walked through the File and Directory Entries
//! API (`webkitGetAsEntry`). The entries must be taken while the drop event runs; they are read
//! afterwards.

use js_sys::{Array, Function, Promise};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{DataTransfer, FileSystemDirectoryEntry, FileSystemEntry, FileSystemFileEntry};

use crate::load::{js_err, read_named, wanted, Files};

/// The entries of a drop, taken during the event. Empty when the browser gives none (then the
/// drop's plain file list is used).
pub fn entries(dt: &DataTransfer) -> Vec<FileSystemEntry> {
    let items = dt.items();
    (0..items.length()).filter_map(|i| items.get(i)).filter_map(|it| it.webkit_get_as_entry().ok().flatten()).collect()
}

/// Walks the dropped entries (folders to any depth) and reads the files a model uses, each named
/// by its path from the dropped folder.
pub async fn read_entries(roots: Vec<FileSystemEntry>) -> Result<Files, String> {
    let mut stack = roots;
    let mut named = Vec::new();
    while let Some(e) = stack.pop() {
        if e.is_directory() {
            let reader = e.unchecked_into::<FileSystemDirectoryEntry>().create_reader();
            // readEntries hands over a batch per call (100 in Chrome) until it returns none.
            loop {
                let batch = callback(|ok, err| reader.read_entries_with_callback_and_callback(ok, err).map_err(|e| js_err(&e))).await?;
                let batch: Array = batch.unchecked_into();
                if batch.length() == 0 {
                    break;
                }
                stack.extend(batch.iter().map(|x| x.unchecked_into::<FileSystemEntry>()));
            }
        } else if e.is_file() && wanted(&e.name()) {
            let path = e.full_path();
            let f = e.unchecked_into::<FileSystemFileEntry>();
            let file = callback(|ok, err| {
                f.file_with_callback_and_callback(ok, err);
                Ok(())
            })
            .await
            .map_err(|m| format!("{path}: {m}"))?;
            named.push((path, file.unchecked_into::<web_sys::File>()));
        }
    }
    read_named(named).await
}

/// Awaits a callback-style call (success, error).
async fn callback(call: impl FnOnce(&Function, &Function) -> Result<(), String>) -> Result<JsValue, String> {
    let mut res = Ok(());
    let mut call = Some(call);
    let p = Promise::new(&mut |ok, err| {
        if let Some(c) = call.take() {
            res = c(&ok, &err);
        }
    });
    res?;
    JsFuture::from(p).await.map_err(|e| js_err(&e))
}
