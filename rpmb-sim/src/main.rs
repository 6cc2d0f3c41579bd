//! `rpmb-sim`: create, inspect, serve and benchmark RPMB images.
#![forbid(unsafe_code)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rpmb_sim::{bench, serve, CreateOptions, DeviceInfo, RpmbDevice};

const USAGE: &str = "\
usage:
  rpmb-sim create IMAGE [--size-mult N] [--cid HEX32] [--rel-wr-sec-c N]
  rpmb-sim show IMAGE [--json]
  rpmb-sim serve IMAGE [--no-sync]
  rpmb-sim bench DIR [--seconds S] [--out FILE]

create   make a new image (refuses to overwrite). Defaults: --size-mult 16
         (16 x 128 KiB = 2 MiB), --rel-wr-sec-c 1 (2 blocks per write), the
         fixed test CID 52015352504d42534d10000000011ad7 (see SPEC.md).
show     print the device parameters and state (never the key).
serve    read raw 512-byte request frames on stdin, write response frames
         on stdout (SPEC.md, \"Frame stream\"); ends at end of input.
         --no-sync skips fsync (still atomic against a killed process).
bench    measure authenticated writes/s and reads/s (file with and without
         fsync, memory); prints a Markdown table, --out also writes it.
";

enum Fail {
    Usage(String),
    Run(String),
}

impl From<rpmb_sim::Error> for Fail {
    fn from(e: rpmb_sim::Error) -> Self {
        Fail::Run(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            eprintln!("rpmb-sim: usage error: {m} (try 'rpmb-sim --help')");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            eprintln!("rpmb-sim: error: {m}");
            ExitCode::from(1)
        }
    }
}

/// Splits arguments into positionals and `--flag [value]` options.
struct Args {
    positional: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

fn parse(args: &[String], with_value: &[&str], flags: &[&str]) -> Result<Args, Fail> {
    let mut out = Args {
        positional: Vec::new(),
        options: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if with_value.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Fail::Usage(format!("--{name} needs a value")))?,
                };
                out.options.push((name.to_string(), Some(v)));
            } else if flags.contains(&name) && inline.is_none() {
                out.options.push((name.to_string(), None));
            } else {
                return Err(Fail::Usage(format!("unknown option --{name}")));
            }
        } else {
            out.positional.push(a.clone());
        }
    }
    Ok(out)
}

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }
    fn one_path(&self, what: &str) -> Result<PathBuf, Fail> {
        match self.positional.as_slice() {
            [p] => Ok(PathBuf::from(p)),
            [] => Err(Fail::Usage(format!("missing {what}"))),
            _ => Err(Fail::Usage(format!("expected one {what}"))),
        }
    }
}

fn run(args: &[String]) -> Result<(), Fail> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(Fail::Usage("no command".into()));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        "-V" | "--version" => {
            println!("rpmb-sim {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "create" => cmd_create(rest),
        "show" => cmd_show(rest),
        "serve" => cmd_serve(rest),
        "bench" => cmd_bench(rest),
        other => Err(Fail::Usage(format!("unknown command '{other}'"))),
    }
}

fn parse_u8(name: &str, v: &str) -> Result<u8, Fail> {
    v.parse::<u8>()
        .map_err(|_| Fail::Usage(format!("--{name}: '{v}' is not a number 0..=255")))
}

fn parse_cid(v: &str) -> Result<[u8; 16], Fail> {
    let bad = || Fail::Usage(format!("--cid: '{v}' is not 32 hexadecimal digits"));
    let b = v.as_bytes();
    if b.len() != 32 {
        return Err(bad());
    }
    let mut cid = [0u8; 16];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        let byte = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        if let Some(c) = cid.get_mut(i) {
            *c = byte;
        }
    }
    Ok(cid)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cmd_create(rest: &[String]) -> Result<(), Fail> {
    let a = parse(rest, &["size-mult", "cid", "rel-wr-sec-c"], &[])?;
    let path = a.one_path("IMAGE")?;
    let mut opts = CreateOptions::default();
    if let Some(v) = a.value("size-mult") {
        opts.size_mult = parse_u8("size-mult", v)?;
    }
    if let Some(v) = a.value("rel-wr-sec-c") {
        opts.rel_wr_sec_c = parse_u8("rel-wr-sec-c", v)?;
    }
    if let Some(v) = a.value("cid") {
        opts.cid = parse_cid(v)?;
    }
    if let Err(e) = opts.validate() {
        return Err(Fail::Usage(e.to_string()));
    }
    RpmbDevice::create(&path, &opts)?;
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn show_json(i: &DeviceInfo) -> String {
    format!(
        "{{\"image\":{},\"format_version\":{},\"cid\":\"{}\",\"size_mult\":{},\
         \"capacity_bytes\":{},\"capacity_blocks\":{},\"rel_wr_sec_c\":{},\
         \"max_write_blocks\":{},\"key_programmed\":{},\"write_counter\":{},\
         \"counter_expired\":{},\"used_blocks\":{}}}",
        json_str(&i.image),
        i.format_version,
        hex(&i.cid),
        i.size_mult,
        i.capacity_bytes,
        i.capacity_blocks,
        i.rel_wr_sec_c,
        i.max_write_blocks,
        i.key_programmed,
        i.write_counter,
        i.counter_expired,
        i.used_blocks
    )
}

fn show_text(i: &DeviceInfo) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "image:           {}\n\
         format version:  {}\n\
         CID:             {}\n\
         capacity:        {} bytes (size_mult {} x 128 KiB, {} blocks of 256 bytes)\n\
         rel_wr_sec_c:    {} (at most {} blocks per authenticated write)\n\
         key programmed:  {}\n\
         write counter:   {}{}\n\
         blocks used:     {} (blocks that are not all zero)\n",
        i.image,
        i.format_version,
        hex(&i.cid),
        i.capacity_bytes,
        i.size_mult,
        i.capacity_blocks,
        i.rel_wr_sec_c,
        i.max_write_blocks,
        yn(i.key_programmed),
        i.write_counter,
        if i.counter_expired { " (expired)" } else { "" },
        i.used_blocks
    )
}

fn cmd_show(rest: &[String]) -> Result<(), Fail> {
    let a = parse(rest, &[], &["json"])?;
    let path = a.one_path("IMAGE")?;
    let dev = RpmbDevice::open(&path)?;
    let info = dev.info();
    if a.flag("json") {
        println!("{}", show_json(&info));
    } else {
        print!("{}", show_text(&info));
    }
    Ok(())
}

fn cmd_serve(rest: &[String]) -> Result<(), Fail> {
    let a = parse(rest, &[], &["no-sync"])?;
    let path = a.one_path("IMAGE")?;
    let mut dev = RpmbDevice::open(&path)?;
    dev.set_durable(!a.flag("no-sync"));
    let stdin = std::io::stdin().lock();
    let stdout = BufWriter::new(std::io::stdout().lock());
    let stats = serve::serve(&mut dev, stdin, stdout)?;
    if stats.discarded_bytes > 0 {
        eprintln!(
            "rpmb-sim: warning: {}: discarded {} bytes of an incomplete request at end of input",
            path.display(),
            stats.discarded_bytes
        );
    }
    Ok(())
}

fn cmd_bench(rest: &[String]) -> Result<(), Fail> {
    let a = parse(rest, &["seconds", "out"], &[])?;
    let dir = a.one_path("DIR")?;
    let seconds = match a.value("seconds") {
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
            .ok_or_else(|| Fail::Usage(format!("--seconds: '{v}' is not in (0, 3600]")))?,
        None => 2.0,
    };
    let rows = bench::run(&dir, seconds)?;
    let table = format!(
        "rpmb-sim bench: {} per measurement, image in {}\n\n{}",
        format_args!("{seconds} s"),
        dir.display(),
        bench::markdown(&rows)
    );
    print!("{table}");
    std::io::stdout()
        .flush()
        .map_err(|e| Fail::Run(format!("stdout: {e}")))?;
    if let Some(out) = a.value("out") {
        write_file(Path::new(out), &table)?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), Fail> {
    std::fs::write(path, text).map_err(|e| Fail::Run(format!("{}: {e}", path.display())))
}
