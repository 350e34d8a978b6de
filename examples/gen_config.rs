//! Rewrites the files generated from the config key table (src/config/keys.rs):
//! etc/flowd.cfg (and its fuzz-corpus copy), the CONFIGURATION section of etc/flowd.8
//! and docs/configuration.md. Run by `make gen-config`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, text) in flowd::config::render::generated(root)? {
        let file = root.join(path);
        if std::fs::read_to_string(&file).is_ok_and(|old| old == text) {
            continue;
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&file, text)?;
        println!("wrote {path}");
    }
    Ok(())
}
