//! The repository: what pitrkit stores and how it reads it back. One module per section
//! of docs/FORMAT.md; `layout` owns every object key.

pub mod archive;
pub mod chunk;
pub mod crypto;
pub mod lag;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod object;
pub mod retention;
mod root;
pub mod summary;

pub use root::*;
