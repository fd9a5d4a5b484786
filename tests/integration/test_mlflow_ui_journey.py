"""Pick the pretrained models in MLflow's UI, then continue training from them: the README's
step 3, as a person does it, in a real headless Chromium with a fresh profile.

TCB and SSB pretraining (``launch/pretrain_tcb.py``, ``launch/pretrain_ssb.py``, tiny configs,
registered as ``stcnn-tcb`` / ``stcnn-ssb`` with the alias ``pretrained``) print the MLflow UI
line; the UI is started exactly as printed (only the port is changed to a free one) and the
printed link opened: it must show the experiment's training runs. In the UI the person opens
each registered model's version and gives it the alias ``candidate`` (clicks and typing). Then
``launch/train_offline.py "init_from=[models:/stcnn-tcb@candidate,models:/stcnn-ssb@candidate]"``,
started from another working directory, must start from exactly those versions' weights.

Two stores: the embedded default (no ``MLFLOW_TRACKING_URI``; ``runs/mlflow.db`` beside the
run folders, the offline run's folder next to them) and a real ``mlflow server`` on 127.0.0.1
named by ``MLFLOW_TRACKING_URI`` (its UI is the server). The four pretraining runs are started
together (the embedded ones one after the other: they create the same sqlite file).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from support import PortTaken, address_in_use, child_env, start_on_free_port
from support.mlflow_server import answers, stop_group
from support.training import REPO, failure, summary, torchrun_cmd

pytestmark = pytest.mark.slow

INSTALL = ("install the browser with `apt-get install -y chromium chromium-driver` (bash "
           "scripts/setup.sh does it as root) and selenium with `pip install selenium` (the "
           "test extra)")
MODELS = {"gan": "stcnn-tcb", "segmentation": "stcnn-ssb"}
STEPS = "steps=2"
WAIT_S = 120        # for a page or an element, on 2 busy cores


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/lib/chromium/chromedriver" if Path("/usr/lib/chromium/chromedriver").is_file()
        else None)
    if not chromium or not driver:
        pytest.skip(f"Chromium or chromedriver not found: {INSTALL}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip(f"selenium is not installed: {INSTALL}")
    return chromium, driver


# -- the pretraining runs ------------------------------------------------------------------------

def _start(phase: str, lake: Path, run_dir: Path, env: dict) -> subprocess.Popen:
    """A pretraining phase from the project folder (``run_dir``'s grandparent), tracked; its
    output goes to ``<run_dir>.out``."""
    cmd = torchrun_cmd(phase, lake, run_dir, STEPS, "tracking.experiment=stcnn-ui",
                       "tracking.alias=pretrained", "checkpoint.every=1000", nproc=1,
                       python_if_one=True, tracking=True)
    with open(run_dir.parent / f"{run_dir.name}.out", "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=run_dir.parent.parent, stdout=out,
                                stderr=subprocess.STDOUT)
    proc.out_path = run_dir.parent / f"{run_dir.name}.out"
    return proc


def _finish(proc: subprocess.Popen) -> str:
    """Its output, once it ended with 0."""
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = proc.out_path.read_text()
    assert proc.returncode == 0, failure(subprocess.CompletedProcess(proc.args, proc.returncode,
                                                                     text, ""))
    return text


@pytest.fixture(scope="module")
def pretrained(train_lake, server, tmp_path_factory):
    """Per store: the project folder, its runs folder and store URI, each phase's printed
    output and summary."""
    _browser_paths()
    variants = {}
    for name, uri in (("embedded", None), ("server", server.uri)):
        project = tmp_path_factory.mktemp(f"journey_{name}")
        (project / "runs").mkdir()
        env = child_env() if uri is None else child_env(MLFLOW_TRACKING_URI=uri)
        variants[name] = {"project": project, "runs": project / "runs", "env": env}
    emb, srv = variants["embedded"], variants["server"]
    first = _start("gan", train_lake, emb["runs"] / "tcb", emb["env"])
    procs = {("server", "gan"): _start("gan", train_lake, srv["runs"] / "tcb", srv["env"]),
             ("server", "segmentation"): _start("segmentation", train_lake, srv["runs"] / "ssb",
                                                srv["env"])}
    try:
        outputs = {("embedded", "gan"): _finish(first)}
        procs[("embedded", "segmentation")] = _start("segmentation", train_lake,
                                                     emb["runs"] / "ssb", emb["env"])
        outputs |= {key: _finish(p) for key, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, v in variants.items():
        v["printed"] = {phase: outputs[(name, phase)] for phase in MODELS}
        v["summary"] = {"gan": summary(v["runs"] / "tcb"),
                        "segmentation": summary(v["runs"] / "ssb")}
        v["store"] = v["summary"]["gan"]["mlflow_tracking_uri"]
    assert emb["store"] == f"sqlite:///{emb['runs'].resolve().as_posix()}/mlflow.db"
    assert srv["store"] == server.uri
    return variants, train_lake


def _ui_line(printed: str) -> tuple[list[str] | None, str]:
    """(the ``mlflow ui`` command or None for a server, the link) of the job's MLflow UI line."""
    m = re.search(r"^MLflow UI: (mlflow ui .*?)[\s(]+then open (http[^\s)]+)", printed, re.M)
    if m:
        return shlex.split(m.group(1)), m.group(2)
    m = re.search(r"^MLflow UI: (http\S+)$", printed, re.M)
    assert m, f"no MLflow UI line in the job's output:\n{printed[-2000:]}"
    return None, m.group(1)


def _start_ui(command: list[str], link: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow ui`` as printed, on a free port instead of the printed one (in the link too;
    another free port if that one was taken first); the process and the link."""
    env = child_env()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    at = command.index("--port") + 1

    def start(port: int) -> tuple[subprocess.Popen, str]:
        cmd = [*command[:at], str(port), *command[at + 1:]]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=log.parent, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240     # its imports alone take minutes on a loaded machine
        while not answers(f"http://127.0.0.1:{port}/health"):
            text = log.read_text(errors="replace")
            if address_in_use(text):
                stop_group(proc)
                raise PortTaken(port)
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                pytest.fail(f"{' '.join(cmd)} did not start:\n{text[-3000:]}")
            time.sleep(0.5)
        return proc, re.sub(r"^(http://127\.0\.0\.1:)\d+", rf"\g<1>{port}", link)

    return start_on_free_port(start)




# -- the person in the browser -------------------------------------------------------------------

class Person:
    """Clicks and types in a headless Chromium with a fresh profile."""

    def __init__(self, profile: Path, shots: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = _browser_paths()
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        self.driver = webdriver.Chrome(options=opts, service=Service(driver))
        self.shots = shots

    def quit(self) -> None:
        self.driver.quit()

    def _wait(self, condition, what: str, timeout: float = WAIT_S):
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            # the UI re-renders while it loads: an element found a moment ago may be replaced
            # before the condition inspects it; that is "not yet", not a failure
            return WebDriverWait(self.driver, timeout,
                                 ignored_exceptions=(StaleElementReferenceException,)
                                 ).until(condition)
        except TimeoutException:
            shot = self.shots / f"{re.sub(r'[^a-z0-9]+', '_', what.lower())}.png"
            self.driver.save_screenshot(str(shot))
            body = self.driver.find_element("tag name", "body").text
            pytest.fail(f"the UI did not show {what} within {timeout} s at "
                        f"{self.driver.current_url} (screenshot {shot}); the page says:\n"
                        f"{body[:1500]}")

    def sees(self, text: str, timeout: float = WAIT_S):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self._wait(ec.visibility_of_element_located(
            (By.XPATH, f"//*[normalize-space(text())='{text}']")), repr(text), timeout)

    def clicks(self, text: str, tag: str = "*") -> None:
        shown = "normalize-space(text())" if tag == "*" else "normalize-space(.)"
        self.clicks_at(f"//{tag}[{shown}='{text}']", f"a clickable {text!r}")

    def clicks_at(self, xpath: str, what: str, attempts: int = 3) -> None:
        """Click the element at ``xpath`` once it is clickable; found again when a re-render
        replaced it between the wait and the click."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        for attempt in range(attempts):
            try:
                self._wait(ec.element_to_be_clickable((By.XPATH, xpath)), what).click()
                return
            except StaleElementReferenceException:
                if attempt == attempts - 1:
                    raise

    def opens(self, url: str) -> None:
        self.driver.get(url)

    def dismisses_registry_notice(self) -> None:
        """The registry's first visit shows a notice about its new UI: "Try it now"."""
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        notice = (By.XPATH, "//div[@role='dialog']//*[normalize-space(text())='Try it now']")
        for _attempt in range(3):
            try:
                WebDriverWait(self.driver, 10,
                              ignored_exceptions=(StaleElementReferenceException,)
                              ).until(ec.element_to_be_clickable(notice)).click()
                return
            except TimeoutException:          # no notice (an earlier visit dismissed it)
                return
            except StaleElementReferenceException:  # re-rendered between the wait and the click
                continue

    def sets_alias(self, model: str, version: str, alias: str) -> None:
        """Registered model -> its version -> "Edit aliases" -> type the alias -> save."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ec

        self.dismisses_registry_notice()
        self.clicks(model, "a")
        self.clicks(f"Version {version}", "a")
        self.clicks_at("//button[@title='Edit aliases']", "the 'Edit aliases' button")
        box = self._wait(ec.visibility_of_element_located(
            (By.XPATH, "//div[@role='dialog']//input[@role='combobox']")), "the alias field")
        box.send_keys(alias)
        box.send_keys(Keys.ENTER)
        self.clicks("Save aliases", "button")
        self._wait(ec.invisibility_of_element_located((By.XPATH, "//div[@role='dialog']")),
                   "the alias dialog closing")
        self._wait(ec.visibility_of_element_located(           # the alias tag, "@ candidate"
            (By.XPATH, f"//*[@role='status' and @title='{alias}']")), f"the alias {alias!r}")


# -- the journey ---------------------------------------------------------------------------------

def _journey(v: dict, lake: Path, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(tracking_uri=v["store"], registry_uri=v["store"])
    versions = {}                            # the version each pretraining run registered
    for phase, model in MODELS.items():
        mv = client.get_model_version_by_alias(model, "pretrained")
        assert mv.run_id == v["summary"][phase]["mlflow_run_id"]
        assert "candidate" not in mv.aliases
        versions[phase] = str(mv.version)

    command, link = _ui_line(v["printed"]["segmentation"])
    ui = None
    if command:                              # the embedded store: start its UI as printed
        ui, link = _start_ui(command, link, tmp_path / "ui.log")
    person = Person(tmp_path / "profile", tmp_path)
    try:
        person.opens(link)
        for phase in MODELS:         # the training runs of both phases are listed
            person.sees(phase)
        person.clicks("Model registry")             # in the sidebar
        for phase, model in MODELS.items():
            person.sets_alias(model, versions[phase], "candidate")
            person.clicks("Registered Models", "a")   # the breadcrumb, back to the list
    finally:
        person.quit()
        if ui:
            stop_group(ui)
    for phase, model in MODELS.items():        # the UI stored it
        assert str(client.get_model_version_by_alias(model, "candidate").version) == versions[phase]

    elsewhere = tmp_path / "elsewhere"          # another working directory
    elsewhere.mkdir()
    dump = tmp_path / "offline_init.pt"
    env = dict(v["env"], STCNN_INIT_DUMP=str(dump),
               PYTHONPATH=os.pathsep.join([str(REPO / "tests"), v["env"]["PYTHONPATH"]]))
    cmd = torchrun_cmd("alternating", lake, v["runs"] / "offline", STEPS, "init_missing=error",
                       "init_from=[models:/stcnn-tcb@candidate,models:/stcnn-ssb@candidate]",
                       "hooks=[init_dump_hook:dump]", "tracking.experiment=stcnn-ui",
                       "tracking.alias=pretrained", "checkpoint.every=1000", nproc=1,
                       python_if_one=True, tracking=True)
    proc = subprocess.run(cmd, env=env, cwd=elsewhere, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, failure(proc)
    assert os.listdir(elsewhere) == [], "the offline run wrote into its working directory"
    start = torch.load(dump, weights_only=True)
    tcb = torch.load(v["runs"] / "tcb" / "weights.pt", weights_only=True)["models"]
    ssb = torch.load(v["runs"] / "ssb" / "weights.pt", weights_only=True)["models"]
    sources = {"G": tcb["G"], "D": tcb["D"], "SSB": ssb["SSB"]}
    assert set(start) == set(sources)
    for branch, weights in sources.items():
        assert set(start[branch]) == set(weights), branch
        for k, t in weights.items():
            assert torch.equal(start[branch][k], t), f"{branch}.{k} is not the registered weight"


def test_pick_in_the_ui_then_continue_embedded_store(pretrained, tmp_path):
    variants, lake = pretrained
    _journey(variants["embedded"], lake, tmp_path)


def test_pick_in_the_ui_then_continue_mlflow_server(pretrained, tmp_path):
    variants, lake = pretrained
    _journey(variants["server"], lake, tmp_path)
