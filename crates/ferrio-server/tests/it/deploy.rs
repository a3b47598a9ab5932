//! The files in `deploy/` pass their checkers: `nginx -t` on the site (with a throwaway
//! certificate in place of the real one) and `systemd-analyze verify` on the unit.

use std::path::Path;
use std::process::Command;

use crate::support::TempDir;

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn nginx_site_passes_nginx_t() {
    let site = deploy("nginx-site.conf");
    // proxy_read_timeout above the default ping interval + timeout (25 s + 20 s).
    let read_timeout: u64 = site
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("proxy_read_timeout ")?
                .strip_suffix("s;")?
                .parse()
                .ok()
        })
        .expect("proxy_read_timeout in seconds");
    assert!(read_timeout > 45, "{read_timeout}");
    assert!(site.contains("proxy_set_header Upgrade $http_upgrade;"));

    let dir = TempDir::new("nginx");
    let cert = dir.0.join("cert.pem");
    let key = dir.0.join("key.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", output(&made));
    let site = site
        .replace("/etc/ssl/ferrio/fullchain.pem", &cert.display().to_string())
        .replace("/etc/ssl/ferrio/privkey.pem", &key.display().to_string());
    dir.write("site.conf", &site);
    let main = dir.write(
        "nginx.conf",
        &format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d};\n  proxy_temp_path {d};\n  include {d}/site.conf;\n}}\n",
            d = dir.0.display()
        ),
    );
    let checked = Command::new("nginx")
        .arg("-t")
        .arg("-e")
        .arg(dir.0.join("error.log"))
        .arg("-p")
        .arg(&dir.0)
        .arg("-c")
        .arg(&main)
        .output()
        .expect("nginx (the test run installs it) is needed to check deploy/nginx-site.conf");
    assert!(checked.status.success(), "nginx -t: {}", output(&checked));
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("systemd");
    let unit = dir.write("ferrio.service", &deploy("ferrio.service"));
    let Ok(checked) = Command::new("systemd-analyze").arg("verify").arg(&unit).output() else {
        eprintln!("systemd-analyze is not installed; deploy/ferrio.service not verified");
        return;
    };
    let text = output(&checked);
    // The binary is not installed where the unit expects it on a build machine; anything
    // else is a real problem.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("/usr/local/bin/ferrio"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {text}");
}
