//! Plays Godot's part for `tests/unload.rs`: loads the probe cdylib, signs in through it, unloads
//! it, and checks that no thread the library started is left, `rounds` times, then keeps running.
//!
//! Usage: dylib-host <library> <api_url> <client_key> <data_dir> <rounds>
//! Exit status 0 when every round passed; a message on stderr and status 1 otherwise. A thread
//! left running in unloaded code shows up as a count above the baseline or as a crash (signal).

use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

type SignIn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const c_char, *const c_char) -> c_int;

fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn mapped(library: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let name = library.file_name().expect("a file").to_string_lossy();
    maps.lines().any(|l| l.ends_with(&*name))
}

fn round(library: &Path, args: &[CString; 3], device: &CString) -> Result<(), String> {
    // SAFETY: the probe library runs no code at load or unload beyond Rust's own, and the symbol
    // has the signature declared above.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| format!("dlopen: {e}"))?;
    // The call runs on a thread that ends before dlclose: glibc keeps a library mapped while a
    // live thread holds thread-local destructors from it, and this test wants it really unmapped
    // so that a thread left behind faults instead of idling in mapped code.
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: as above; the strings outlive the call.
                unsafe {
                    let sign_in: libloading::Symbol<SignIn> = lib
                        .get(b"aethex_probe_sign_in\0")
                        .map_err(|e| format!("dlsym: {e}"))?;
                    Ok::<_, String>(sign_in(
                        args[0].as_ptr(),
                        args[1].as_ptr(),
                        args[2].as_ptr(),
                        device.as_ptr(),
                    ))
                }
            })
            .join()
            .map_err(|_| "the call panicked".to_owned())?
    })?;
    lib.close().map_err(|e| format!("dlclose: {e}"))?;
    if outcome != 0 {
        return Err(format!("sign-in through the library returned {outcome}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let [_, library, url, key, dir, rounds] = &argv[..] else {
        eprintln!("usage: dylib-host <library> <api_url> <client_key> <data_dir> <rounds>");
        return ExitCode::FAILURE;
    };
    let library = Path::new(library);
    let rounds: usize = rounds.parse().expect("rounds is a number");
    let args = [url, key, dir].map(|s| CString::new(s.as_str()).expect("no NUL"));
    let baseline = threads();
    for n in 0..rounds {
        let device = CString::new(format!("dylib-probe-{}-{n}", std::process::id())).unwrap();
        if let Err(e) = round(library, &args, &device) {
            eprintln!("round {n}: {e}");
            return ExitCode::FAILURE;
        }
        // Joined threads leave /proc a moment after pthread_join returns; the count must come
        // back well within this.
        let deadline = Instant::now() + Duration::from_secs(2);
        while threads().len() != baseline.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = threads();
        if now.len() != baseline.len() {
            eprintln!(
                "round {n}: {} threads after unloading, {} before: {now:?} vs {baseline:?}",
                now.len(),
                baseline.len()
            );
            return ExitCode::FAILURE;
        }
        if mapped(library) {
            eprintln!("round {n}: the library is still mapped after dlclose");
            return ExitCode::FAILURE;
        }
    }
    // Keep running after the last unload, as the engine does, so a straggler would fault here.
    let worker = std::thread::spawn(|| (0..1_000_000u64).sum::<u64>());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(worker.join().unwrap(), 499_999_500_000);
    println!("{rounds} rounds: loaded, signed in, unloaded; no thread left");
    ExitCode::SUCCESS
}
