"""The launch templates in jobs/templates/, checked as far as a machine without Slurm or Kubernetes
allows: the sbatch script parses (bash -n, shellcheck when installed) and follows docs/scaling.md's
recipe; the RayJob manifest parses and has the fields KubeRay requires. Neither is run here."""
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "jobs" / "templates"


def test_templates_are_not_jobs():
    assert not list((REPO / "jobs").glob("templates*.yaml"))  # tests/test_jobs.py runs jobs/*.yaml


def test_sbatch_parses_and_follows_the_recipe():
    script = TEMPLATES / "slurm.sbatch"
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = script.read_text()
    for needed in ("export RAY_AUTH_MODE=token RAY_AUTH_TOKEN", "ray start --head", "ray start --block --address=",
                   'source "$TAMIS_VENV/bin/activate"', 'tamis run "$JOB" --address "$HEAD_IP:$GCS_PORT"', "srun"):
        assert needed in text, needed
    assert shutil.which("shellcheck"), "shellcheck is not installed (.ci/run installs Debian's shellcheck)"
    r = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_rayjob_has_the_fields_kuberay_requires():
    job = yaml.safe_load((TEMPLATES / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("tamis run ") and "--address auto" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].startswith("2.60")
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    assert cluster["workerGroupSpecs"] and all(g["groupName"] and g["replicas"] >= 1 for g in cluster["workerGroupSpecs"])
    pods.append(spec["submitterPodTemplate"])
    for pod in pods:
        for c in pod["spec"]["containers"]:
            assert c["image"] and {e["name"] for e in c["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    for pod in pods[:-1]:  # head and workers read inputs and write the run folder on the same volume
        mounts = {m["name"]: m["mountPath"] for c in pod["spec"]["containers"] for m in c["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
        assert mounts == {"data": "/data"} and claims == {"data": "tamis-data"}
    assert "/data/runs/" in spec["entrypoint"]
