"""One 1 GiB upload over HTTP, measured with the CPU it costs: headless Chromium sending the file
(chosen in a file input, as a person would) in N parallel XMLHttpRequest PUTs of its slices, or
curl's PUT. Prints MiB/s and CPU seconds per GiB of every Chromium process, of curl and of the
gateway. Run by scripts/bench-browser:  bench-browser.py FILE GATEWAY_PID curl|N"""
import os, sys, time, subprocess, base64, shutil
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
BASE = os.environ.get("BASE", "http://127.0.0.1:9191")
PATH = sys.argv[1]
GW = int(sys.argv[2])
MIB = os.path.getsize(PATH) / 1048576
def ticks(pids):
    t = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except FileNotFoundError:
            pass
    return t / os.sysconf("SC_CLK_TCK")
def chromium_pids():
    out = subprocess.run(["pgrep", "-f", "chromium"], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]
opts = webdriver.ChromeOptions()
opts.binary_location = shutil.which("chromium")
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--user-data-dir=" + os.environ.get("PROFILE", "/dev/shm/fg-browser/profile")]:
    opts.add_argument(a)
d = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
d.set_script_timeout(3600)
d.get(BASE + "/healthz")
d.execute_script("const i = document.createElement('input'); i.type = 'file'; i.id = 'f'; document.body.appendChild(i);")
d.find_element(By.ID, "f").send_keys(PATH)
auth = "Basic " + base64.b64encode(b"demo:demo").decode()
JS = """const done = arguments[arguments.length - 1];
const file = document.getElementById('f').files[0];
const n = arguments[1];
const part = Math.ceil(file.size / n);
let left = n; const t0 = performance.now();
for (let i = 0; i < n; i++) {
  const xhr = new XMLHttpRequest();
  xhr.open('PUT', '/api/v1/files/' + arguments[2] + '-' + i + '.bin');
  xhr.setRequestHeader('Authorization', arguments[0]);
  xhr.onload = () => { if (xhr.status >= 300) done(-xhr.status); else if (--left === 0) done((performance.now() - t0) / 1000); };
  xhr.onerror = () => done(-1);
  xhr.send(n === 1 ? file : file.slice(i * part, Math.min(file.size, (i + 1) * part)));
}"""
mode = sys.argv[3]
if mode == "curl":
    g0 = ticks([GW]); t0 = time.time()
    r = subprocess.run(["bash", "-c", f"TIMEFORMAT='%U %S'; time curl -sS -o /dev/null -u demo:demo -T {PATH} {BASE}/api/v1/files/curl.bin"], capture_output=True, text=True)
    secs = time.time() - t0; g1 = ticks([GW])
    u, s_ = map(float, r.stderr.split()[-2:])
    print(f"curl PUT: {MIB/secs:.0f} MiB/s, curl {(u+s_)/(MIB/1024):.2f} CPU-s/GiB, gateway {(g1-g0)/(MIB/1024):.2f} CPU-s/GiB", flush=True)
else:
    n = int(mode)
    cp = chromium_pids()
    c0, g0 = ticks(cp), ticks([GW])
    secs = d.execute_async_script(JS, auth, n, "b")
    c1, g1 = ticks(cp), ticks([GW])
    assert secs > 0, secs
    print(f"browser {n} stream(s): {MIB/secs:.0f} MiB/s, chromium {(c1-c0)/(MIB/1024):.2f} CPU-s/GiB, gateway {(g1-g0)/(MIB/1024):.2f} CPU-s/GiB", flush=True)
d.quit()
