//! Helpers shared by the integration tests in `tests/`: the workspace root, an up-to-date
//! `meta-nca` binary, running it (and asserting success or a clean failure), and scratch
//! folders.
//!
//! The binary belongs to another package, so `CARGO_BIN_EXE_meta-nca` is not available here.
//! The first test to need it runs `cargo build -p meta-nca-cli --bin meta-nca` once, into the
//! same target folder and profile as the running test executable (a no-op when it is up to
//! date, and never a stale binary), and uses `<target>/<profile>/meta-nca`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root (commands run there, so `configs/smoke.toml` resolves).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace")
}

/// Path of an up-to-date `meta-nca` binary of the running test executable's profile.
pub fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("test executable is in <target>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("profile folder is in the target folder");
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).expect("profile folder name");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root())
            .args(["build", "--quiet", "-p", "meta-nca-cli", "--bin", "meta-nca", "--target-dir"])
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().expect("running cargo build");
        assert!(out.status.success(), "cargo build of meta-nca failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let path = profile_dir.join(format!("meta-nca{}", std::env::consts::EXE_SUFFIX));
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}

/// Runs `meta-nca args..` in the workspace root (with `RUST_LOG` unset).
pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).current_dir(root()).env_remove("RUST_LOG").args(args).output().expect("running meta-nca")
}

/// Standard output of a finished command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `meta-nca args..`, asserts success and returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "meta-nca {args:?} failed ({}):\n{}\n{}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

/// Runs `meta-nca args..` and asserts a clean failure (non-zero exit, no panic, an `error` on
/// stderr mentioning every one of `needles`); returns stderr.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "meta-nca {args:?} should fail but succeeded:\n{}", stdout(&o));
    assert_ne!(o.status.code(), None, "meta-nca {args:?} was killed by a signal:\n{err}");
    assert!(!err.contains("panicked"), "meta-nca {args:?} panicked:\n{err}");
    assert!(err.contains("error"), "meta-nca {args:?}: no error on stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "meta-nca {args:?}: stderr does not mention '{n}':\n{err}");
    }
    err
}

/// A fresh scratch folder, removed on drop unless the test failed (then its path is printed).
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new empty folder named after the test suite, the process and `test`.
    pub fn new(test: &str) -> Self {
        let suite = std::env::current_exe()
            .ok()
            .and_then(|e| e.file_stem().map(|s| s.to_string_lossy().split('-').next().unwrap_or("test").to_string()))
            .unwrap_or_else(|| "test".into());
        let dir = std::env::temp_dir().join(format!("meta-nca-{suite}-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch folder");
        Self(dir)
    }

    /// The folder itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// A path inside the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// [`Scratch::path`] as a command-line argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("scratch folder kept: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A rule network of `spec`'s widths with every nonlinearity on: one `tanh` hidden layer of
/// `hidden` units, squashed inputs, updates bounded by `output_scale`, last layer drawn from
/// `±last_init` (large, so that updates are far from zero).
pub fn tanh_rule(
    spec: &meta_nca_rule::perception::PerceptionSpec,
    hidden: usize,
    output_scale: f64,
    last_init: f64,
    rng: &mut impl rand::Rng,
) -> meta_nca_rule::rule::RuleNet {
    let shape = meta_nca_rule::rule::RuleShape {
        input: spec.width(),
        hidden: vec![hidden],
        output: spec.state_width(),
        activation: meta_nca_rule::rule::Activation::Tanh,
        output_scale,
        last_init,
        input_squash: true,
    };
    meta_nca_rule::rule::RuleNet::new(&dfdx::prelude::Cpu::default(), shape, rng)
}
