//! What a release ships, checked from the repository: one version number everywhere, and a
//! Windows library that needs no DLL a player's Windows lacks.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The value of the first `key = "value"` (or `key="value"`) line after `[section]`.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    text.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
}

#[test]
fn one_version_in_crates_plugin_cfg_changelog_and_get_version() {
    let workspace = read("Cargo.toml");
    let version = ini_value(&workspace, "workspace.package", "version")
        .expect("[workspace.package] version in Cargo.toml");
    // AeThexCloud.get_version() returns aethex_sdk::VERSION, this crate's own version.
    assert_eq!(aethex_sdk::VERSION, version, "aethex-sdk's version");

    let plugin = read("addons/aethex_cloud/plugin.cfg");
    assert_eq!(
        ini_value(&plugin, "plugin", "version").as_deref(),
        Some(version.as_str()),
        "plugin.cfg [plugin] version"
    );

    // Every crate takes the workspace's version rather than stating its own.
    let members: Vec<String> = workspace
        .lines()
        .skip_while(|l| !l.starts_with("members"))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
        .collect();
    assert!(members.len() >= 5, "workspace members: {members:?}");
    for member in &members {
        let manifest = read(&format!("{member}/Cargo.toml"));
        assert_eq!(
            ini_value(&manifest, "package", "version").as_deref(),
            None,
            "{member}/Cargo.toml states its own version"
        );
        assert!(
            manifest.contains("version.workspace = true"),
            "{member}/Cargo.toml does not take the workspace's version"
        );
    }

    // The newest entry of the changelog is this release.
    let changelog = read("CHANGELOG.md");
    let newest = changelog
        .lines()
        .find_map(|l| l.strip_prefix("## ["))
        .and_then(|l| l.split_once(']'))
        .map(|(v, _)| v.to_string());
    assert_eq!(newest.as_deref(), Some(version.as_str()), "CHANGELOG.md");
}

/// DLLs every Windows 10+ has. Anything else (libgcc_s_seh-1, libstdc++-6, libwinpthread-1, a
/// vcruntime) would have to ship beside the library, and Godot would fail to load it without.
const SYSTEM_DLLS: &[&str] = &[
    "advapi32.dll",
    "bcrypt.dll",
    "bcryptprimitives.dll",
    "crypt32.dll",
    "gdi32.dll",
    "iphlpapi.dll",
    "kernel32.dll",
    "msvcrt.dll",
    "ncrypt.dll",
    "ntdll.dll",
    "ole32.dll",
    "oleaut32.dll",
    "secur32.dll",
    "shell32.dll",
    "shlwapi.dll",
    "user32.dll",
    "userenv.dll",
    "ws2_32.dll",
];

/// The DLLs a PE file imports, as `objdump -p` lists them.
fn imported_dlls(objdump: &str, file: &Path) -> Vec<String> {
    let out = std::process::Command::new(objdump)
        .arg("-p")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{objdump}: {e}"));
    assert!(out.status.success(), "{objdump} -p {}", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DLL Name:"))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn windows_libraries_import_only_system_dlls() {
    // Set by scripts/test after the Windows build: the DLL(s) to check, separated by ':'.
    let Some(files) = std::env::var_os("AETHEX_TEST_WINDOWS_DLL").filter(|v| !v.is_empty()) else {
        eprintln!("AETHEX_TEST_WINDOWS_DLL unset: no Windows build to check");
        return;
    };
    let objdump = std::env::var("OBJDUMP").unwrap_or_else(|_| "x86_64-w64-mingw32-objdump".into());
    for file in std::env::split_paths(&files) {
        let dlls = imported_dlls(&objdump, &file);
        assert!(
            dlls.iter().any(|d| d == "kernel32.dll"),
            "{}: no import table read ({dlls:?})",
            file.display()
        );
        let foreign: Vec<&String> = dlls
            .iter()
            .filter(|d| !SYSTEM_DLLS.contains(&d.as_str()) && !d.starts_with("api-ms-win-"))
            .collect();
        assert!(
            foreign.is_empty(),
            "{} imports DLLs Windows does not ship: {foreign:?}",
            file.display()
        );
    }
}
