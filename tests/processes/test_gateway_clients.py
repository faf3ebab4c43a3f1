"""Real S3 tools, unchanged, against a real gateway: aws-cli and rclone (a tree with nested, empty and unicode
names and a file over 200 MiB, synced up and back, then ``rclone check``); the lines ``dfsd cluster`` prints; and how
the gateway starts: refusing without credentials, warning when anonymous, never logging a secret."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from gateway_live import ALICE, LiveGateway
from harness import LocalCluster

from dfsd import processes

MIB = 1024 * 1024
VENV_BIN = Path(sys.executable).parent


def tool_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment with the tools of this installation first on the PATH, and no CA bundle of the host's that
    would make rclone and aws-cli try TLS settings on a plain-HTTP endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "AWS_PROFILE")}
    return {**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "HOME": env.get("HOME", "/tmp"), **extra}


def aws_env(live_gateway: LiveGateway) -> dict[str, str]:
    return tool_env(
        {
            "AWS_ACCESS_KEY_ID": ALICE.access_key,
            "AWS_SECRET_ACCESS_KEY": ALICE.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
    )


def rclone_env(live_gateway: LiveGateway) -> dict[str, str]:
    return tool_env(
        {
            "RCLONE_S3_PROVIDER": "Other",
            "RCLONE_S3_ENDPOINT": live_gateway.endpoint,
            "RCLONE_S3_ACCESS_KEY_ID": ALICE.access_key,
            "RCLONE_S3_SECRET_ACCESS_KEY": ALICE.secret_key,
            "RCLONE_CONFIG": "/dev/null",
        }
    )


def run(command: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.skipif(shutil.which("aws", path=str(VENV_BIN)) is None, reason="aws-cli is not installed (test extras)")
def test_aws_cli_cp_ls_sync_rm(live_gateway: LiveGateway, tmp_path: Path) -> None:
    env, endpoint = aws_env(live_gateway), ["--endpoint-url", live_gateway.endpoint]
    aws = str(VENV_BIN / "aws")
    bucket = live_gateway.bucket()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "small.txt").write_text("small\n")
    (tmp_path / "up" / "big.bin").write_bytes(os.urandom(20 * MIB))  # over aws-cli's 8 MiB multipart threshold
    run([aws, *endpoint, "s3", "sync", str(tmp_path / "up"), f"s3://{bucket}/tree"], env)
    listing = run([aws, *endpoint, "s3", "ls", "--recursive", f"s3://{bucket}"], env)
    assert "tree/small.txt" in listing and "tree/big.bin" in listing
    run([aws, *endpoint, "s3", "cp", f"s3://{bucket}/tree/big.bin", str(tmp_path / "big.copy")], env)
    assert (tmp_path / "big.copy").read_bytes() == (tmp_path / "up" / "big.bin").read_bytes()
    run([aws, *endpoint, "s3", "rm", "--recursive", f"s3://{bucket}/tree"], env)
    assert live_gateway.names(bucket + "/") == []


def test_rclone_sync_up_and_back_then_check(live_gateway: LiveGateway, tmp_path: Path) -> None:
    assert shutil.which("rclone"), "rclone is missing: .ci/run installs it (apt-get install rclone)"
    env, bucket = rclone_env(live_gateway), live_gateway.bucket()
    tree = tmp_path / "tree"
    (tree / "nested" / "deeper").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "ünïcödé dir").mkdir()
    (tree / "nested" / "deeper" / "leaf.txt").write_text("leaf\n")
    (tree / "ünïcödé dir" / "名前 with spaces.txt").write_text("unicode\n")
    (tree / "zero-bytes").write_bytes(b"")
    with open(tree / "large.bin", "wb") as large:  # over rclone's 200 MiB multipart cutoff
        for _ in range(201):
            large.write(os.urandom(MIB))
    run(["rclone", "sync", str(tree), f":s3:{bucket}/tree"], env)
    run(["rclone", "check", str(tree), f":s3:{bucket}/tree", "--download"], env)
    back = tmp_path / "back"
    run(["rclone", "sync", f":s3:{bucket}/tree", str(back)], env)
    run(["rclone", "check", str(tree), str(back)], env)
    (tree / "nested" / "deeper" / "leaf.txt").write_text("changed leaf\n")  # a PUT over an existing key
    run(["rclone", "sync", str(tree), f":s3:{bucket}/tree"], env)
    run(["rclone", "check", str(tree), f":s3:{bucket}/tree", "--download"], env)


def test_dfsd_cluster_prints_lines_that_work(tmp_path: Path) -> None:
    command = processes.dfsd_command(
        "cluster", "--nodes", "1", "--port", "0", "--gateway-port", "0", "--data", str(tmp_path / "data")
    )
    cluster = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        assert cluster.stdout is not None
        lines = []
        for line in cluster.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C"):
                break
        credentials = tmp_path / "data" / "gateway-credentials.toml"
        assert credentials.stat().st_mode & 0o777 == 0o600
        (tmp_path / "hello.txt").write_text("hello\n")
        script = "\n".join(["set -e", *(line.strip() for line in lines if line.startswith("  ")), ""])
        script = re.sub(r"^.*(dfs-push|dfs-cat|dfs-ls|dfsd status|echo hello).*$", "", script, flags=re.M)
        result = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=tool_env({}), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        assert "hello.txt" in result.stdout  # rclone ls :s3:demo, after aws-cli and rclone each stored it
    finally:
        cluster.send_signal(signal.SIGINT)
        try:
            cluster.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()


def test_gateway_refuses_to_start_without_credentials(bare_cluster: LocalCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFS_S3_")}
    result = subprocess.run(
        processes.dfsd_command("gateway", "--port", "0", "--manager", bare_cluster.address),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "no credentials" in result.stderr


def test_anonymous_gateway_warns_serves_metrics_and_environment_credentials_are_never_logged(
    bare_cluster: LocalCluster,
) -> None:
    anonymous = bare_cluster.start_gateway("--anonymous", "--metrics-port", "0")
    assert "anonymous_access" in anonymous.log.read_text()
    with urllib.request.urlopen(f"http://{anonymous.address}/", timeout=30) as response:  # unsigned, yet served
        assert b"<ListAllMyBucketsResult" in response.read()
    metrics_url = re.search(r'"url": "(http://[^"]+/metrics)"', anonymous.log.read_text())
    assert metrics_url is not None
    with urllib.request.urlopen(metrics_url.group(1), timeout=30) as response:
        assert 'dfsd_requests_total{op="s3.list_buckets",outcome="200"} 1.0' in response.read().decode()
    secret = "never-in-the-log-0123456789"
    keyed = bare_cluster.start_gateway(env={"DFS_S3_ACCESS_KEY": "AKIDENV", "DFS_S3_SECRET_KEY": secret})
    url = f"http://{keyed.address}/"
    subprocess.run(["curl", "-s", "-u", f"AKIDENV:{secret}", url + "file/x"], capture_output=True, timeout=30)
    keyed.terminate()
    assert keyed.process.returncode == 0  # a clean shutdown
    assert secret not in keyed.log.read_text() and "AKIDENV" in keyed.log.read_text()


@pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (apt-get install restic)")
def test_restic_backup_restore_check(live_gateway: LiveGateway, tmp_path: Path) -> None:
    bucket = live_gateway.bucket()
    env = tool_env(
        {
            "AWS_ACCESS_KEY_ID": ALICE.access_key,
            "AWS_SECRET_ACCESS_KEY": ALICE.secret_key,
            "RESTIC_REPOSITORY": f"s3:{live_gateway.endpoint}/{bucket}/restic",
            "RESTIC_PASSWORD": "correct horse",
            "RESTIC_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "notes.txt").write_text("important\n")
    (data / "blob.bin").write_bytes(os.urandom(3 * MIB))
    run(["restic", "init"], env)
    run(["restic", "backup", "data"], env, cwd=tmp_path)
    run(["restic", "restore", "latest", "--target", str(tmp_path / "restored")], env)
    assert (tmp_path / "restored" / "data" / "blob.bin").read_bytes() == (data / "blob.bin").read_bytes()
    run(["restic", "check"], env)
