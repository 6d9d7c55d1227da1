"""`tritmoe serve` under mpirun for the length of a `with` block, stopped cleanly on every path.

The server is started in its own process group on free ports (--ports-file), so that whatever
happens to the study (an exception, Ctrl-C, a failed bench) the `with` exit sends SIGTERM to
rank 0, waits, and kills the whole group if it has not gone: no stray mpirun is left behind.
"""
import json
import os
import signal
import subprocess
import time


class ServerError(RuntimeError):
    pass


class Server:
    def __init__(self, tritmoe, model, ranks, work, mpirun=None, threads=1, extra=(),
                 start_timeout=180):
        self.tritmoe, self.model, self.ranks, self.work = tritmoe, model, ranks, work
        self.mpirun, self.threads, self.extra = mpirun, threads, list(extra)
        self.start_timeout = start_timeout
        self.proc = None
        self.http_port = None
        self.pid = None
        self.log_path = os.path.join(work, f"serve_np{ranks}.log")
        self.command = None

    def __enter__(self):
        os.makedirs(self.work, exist_ok=True)
        ports = os.path.join(self.work, f"ports_np{self.ranks}.json")
        if os.path.exists(ports):
            os.remove(ports)
        cmd = [self.tritmoe, "serve", "--model", self.model, "--host", "127.0.0.1", "--port", "0",
               "--grpc-port", "-1", "--ports-file", ports, "--threads", str(self.threads)]
        cmd += self.extra
        if self.ranks > 1 or self.mpirun:
            if not self.mpirun:
                raise ServerError(f"{self.ranks} ranks need --mpirun")
            cmd = [self.mpirun, "-np", str(self.ranks)] + cmd
        self.command = cmd
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            deadline = time.time() + self.start_timeout
            while not os.path.exists(ports):
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited ({self.proc.returncode}) before serving:\n"
                                      + self.log_tail())
                if time.time() > deadline:
                    raise ServerError(f"server not up after {self.start_timeout} s:\n"
                                      + self.log_tail())
                time.sleep(0.1)
            time.sleep(0.05)  # the file is written whole, but give the writer its close
            p = json.load(open(ports))
            self.http_port, self.pid = p["http_port"], p["pid"]
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, n=40):
        self._log.flush()
        with open(self.log_path) as f:
            return "".join(f.readlines()[-n:])

    def stop(self):
        """SIGTERM to rank 0 (it stops every rank); SIGKILL to the group if that fails.
        Returns the launcher's exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                os.kill(self.pid if self.pid else self.proc.pid, signal.SIGTERM)
                rc = self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                rc = None
        try:  # the group, in case a rank outlived the launcher
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait()
        self._log.close()
        return rc

    def __exit__(self, *exc):
        self.exit_code = self.stop()
        return False
