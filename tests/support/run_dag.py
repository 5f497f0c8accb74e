"""Run one DAG with ``dag.test()`` in this process and print its final state: ``run_dag.py DAG_FILE CONF_JSON``."""

import importlib.util
import json
import sys

sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[1]).resolve().parent))  # as Airflow puts dags/ on the path
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = module.dag.test(run_conf=json.loads(sys.argv[2]))
print(json.dumps({"state": str(run.state)}))
