"""docker-py (PyPI `docker`) against `moat serve`, unchanged: run by tests/api.rs with
DOCKER_HOST pointing at a server whose store has the image `busybox`."""

import time

import docker
import pytest


@pytest.fixture(scope="module")
def client():
    c = docker.DockerClient(base_url=__import__("os").environ["DOCKER_HOST"], timeout=60)
    yield c
    for ctr in c.containers.list(all=True):
        ctr.remove(force=True)
    c.close()


def test_ping_version_info(client):
    assert client.ping()
    v = client.version()
    assert v["ApiVersion"] == "1.50"
    assert client.info()["OSType"] == "linux"


def test_run_returns_output_and_exit_codes(client):
    assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as e:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 3"], remove=True)
    assert e.value.exit_status == 3
    assert b"oops" in e.value.stderr


def test_detached_container_lifecycle_and_streamed_logs(client):
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "trap 'exit 0' TERM; for i in 1 2 3; do echo line $i; done; while true; do sleep 0.1; done"],
        detach=True,
        name="pyweb",
        labels={"suite": "dockerpy"},
    )
    c.reload()
    assert c.status == "running"
    assert c.name == "pyweb"
    assert c.labels["suite"] == "dockerpy"
    deadline = time.time() + 15
    while b"line 3" not in c.logs() and time.time() < deadline:
        time.sleep(0.05)
    assert c.logs() == b"line 1\nline 2\nline 3\n"
    stream = c.logs(stream=True, follow=True)
    assert next(stream) == b"line 1\n"
    listed = client.containers.list(filters={"label": "suite=dockerpy"})
    assert [x.name for x in listed] == ["pyweb"]
    c.stop(timeout=5)
    rest = b"".join(stream)
    assert rest == b"line 2\nline 3\n", "the followed stream ends when the container does"
    assert c.wait()["StatusCode"] == 0
    c.reload()
    assert c.status == "exited"
    assert client.containers.list(all=True, filters={"status": "exited"})[0].name == "pyweb"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("pyweb")


def test_exec_run(client):
    c = client.containers.run("busybox", ["sleep", "60"], detach=True)
    try:
        r = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 4"])
        assert r.exit_code == 4
        assert b"out" in r.output and b"err" in r.output
        r = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
        assert r.output == (b"out\n", b"err\n")
        r = c.exec_run(["cat", "/etc/hostname"], environment={"A": "1"}, workdir="/etc")
        assert r.exit_code == 0 and r.output.strip() == c.id[:12].encode()
    finally:
        c.remove(force=True)


def test_resize_a_terminal_and_networks(client):
    c = client.containers.run("busybox", ["sh"], detach=True, tty=True, stdin_open=True)
    try:
        c.resize(height=33, width=101)
        r = c.exec_run(["stty", "-F", "/proc/1/fd/0", "size"])
        assert r.output.strip() == b"33 101", r.output
        # An exec's terminal, resized while it runs.
        e = client.api.exec_create(c.id, ["sh", "-c", "sleep 1; stty size"], tty=True)
        out = client.api.exec_start(e["Id"], tty=True, stream=True)
        time.sleep(0.4)
        client.api.exec_resize(e["Id"], height=25, width=90)
        assert b"".join(out).strip() == b"25 90"
    finally:
        c.remove(force=True)
    with pytest.raises(docker.errors.APIError):
        c2 = client.containers.create("busybox", ["true"])
        try:
            c2.resize(height=10, width=10)
        finally:
            c2.remove(force=True)
    net = client.networks.create("pynet", driver="bridge", labels={"suite": "dockerpy"})
    try:
        a = client.containers.run("busybox", ["sleep", "60"], detach=True, name="pya", network="pynet")
        try:
            out = client.containers.run("busybox", ["ping", "-c1", "-W2", "pya"], network="pynet", remove=True)
            assert b"1 packets received" in out
            net.reload()
            assert [x.name for x in net.containers] == ["pya"]
        finally:
            a.remove(force=True)
    finally:
        net.remove()
    assert [n.name for n in client.networks.list(names=["pynet"])] == []


def test_images(client):
    names = [t for i in client.images.list() for t in i.tags]
    assert "busybox:latest" in names
    img = client.images.get("busybox")
    assert img.id.startswith("sha256:")
    # Untagging one of several tags is allowed while a container uses the image.
    user = client.containers.create("busybox", ["true"])
    assert img.tag("py/tagged", "v1")
    assert "py/tagged:v1" in client.images.get("py/tagged:v1").tags
    client.images.remove("py/tagged:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("py/tagged:v1")
    with pytest.raises(docker.errors.APIError) as e:
        client.images.remove("busybox")
    assert e.value.status_code == 409, "the last tag of an image in use stays"
    user.remove()
    with pytest.raises(docker.errors.ImageNotFound):
        client.containers.create("no-such-image-here", ["true"])


def test_volumes(client):
    v = client.volumes.create("pyvol", labels={"a": "b"})
    assert v.name == "pyvol" and v.attrs["Labels"] == {"a": "b"}
    out = client.containers.run(
        "busybox", ["sh", "-c", "echo data > /v/f; cat /v/f"], volumes={"pyvol": {"bind": "/v", "mode": "rw"}}, remove=True
    )
    assert out == b"data\n"
    assert "pyvol" in [x.name for x in client.volumes.list()]
    client.volumes.get("pyvol").remove()
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get("pyvol")
