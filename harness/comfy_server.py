"""A real ComfyUI server process on a free loopback port, with the pack and the test nodes.

The server gets its own --base-directory (custom_nodes, models, input, output, user), so tests
never touch the provisioned ComfyUI tree and the test-only nodes are linked only here.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import comfy_env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base_dir, node_packages=("gag_test_nodes",)):
        """node_packages: the packages of harness/comfy_nodes linked in beside the pack."""
        self.base_dir = base_dir
        self.node_packages = node_packages
        self.port = None
        self.process = None
        self.log_path = base_dir / "comfyui.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _prepare_base_dir(self):
        nodes = self.base_dir / "custom_nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        links = {"ComfyUI-GAG": comfy_env.PACK_DIR,
                 **{name: comfy_env.TEST_NODES_DIR / name for name in self.node_packages}}
        for link in nodes.iterdir():  # a node package linked by an earlier run with other packages
            if link.is_symlink() and link.name not in links:
                link.unlink()
        for name, target in links.items():
            link = nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        for folder in ("models/checkpoints", "models/vae_approx", "models/diffusion_models", "input", "output"):
            (self.base_dir / folder).mkdir(parents=True, exist_ok=True)
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))

    def start(self, timeout=180):
        self._prepare_base_dir()
        self.port = free_port()
        root = comfy_env.comfyui_dir()
        command = [
            sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--base-directory", str(self.base_dir), "--preview-method", "none",
            "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
        ]
        self._log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=root, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path, payload):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"POST {path} -> {error.code}: {error.read().decode(errors='replace')}") from None

    def queue(self, prompt):
        """Queue an API-format workflow; returns its prompt id."""
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]

    def wait(self, prompt_id, timeout=300):
        """The /history entry of a finished prompt; raises if it failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                if entry.get("status", {}).get("status_str") == "error":
                    raise RuntimeError(f"prompt {prompt_id} failed: {json.dumps(entry['status'], indent=1)}")
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-4000:]}")

    def run(self, prompt, timeout=300):
        return self.wait(self.queue(prompt), timeout)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process is not None:
            self._log_file.close()
