"""The one-line ``SPARK_TRITON_ERROR:`` summary: the real cause, not the wrapper it arrived in."""

from __future__ import annotations

from spark_jobs.batch_inference import error_summary
from spark_jobs.contract import JobConfigError

MODEL_ERROR = """An exception was thrown from the Python worker:
Traceback (most recent call last):
  File "/work/spark_jobs/inference.py", line 84, in predict
    result = infer(inputs)
  File "/venv/pytriton/client/client.py", line 694, in _infer
    raise PyTritonClientInferenceServerError(
pytriton.client.exceptions.PyTritonClientInferenceServerError: Error occurred during inference request. Message: Failed to process the request(s) for model 'm_0_0', message: TritonModelException: Model execute error: Traceback (most recent call last):
  File "/tmp/folder/1/model.py", line 492, in execute
    raise triton_responses_or_error
c_python_backend_utils.TritonModelException: Traceback (most recent call last):
  File "/work/spark_jobs/models/hashing_embedder.py", line 56, in infer
    raise RuntimeError(f"hashing_embedder asked to fail on text {fail!r}")
RuntimeError: hashing_embedder asked to fail on text 'poison'



At:
  /tmp/folder/1/model.py(501): execute
"""

START_ERROR = """An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.
: org.apache.spark.SparkException: Job aborted due to stage failure: Could not recover from a failed barrier ResultStage.
org.apache.spark.api.python.PythonException: Traceback (most recent call last):
  File "/work/spark_jobs/triton_node.py", line 200, in ensure_local_server
spark_jobs.triton_node.TritonStartError: Triton server for model 'm:MODEL' on host node-1 exited before ready; server log tail:
Traceback (most recent call last):
  File "/work/spark_jobs/models/hashing_embedder.py", line 50, in _load
ValueError: hashing_embedder option 'seconds_per_batch' must be >= 0, got -1.0
\tat org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:1097)
\tat java.base/java.lang.Thread.run(Thread.java:840)
"""


class PythonException(Exception):
    pass


class Py4JJavaError(Exception):
    pass


def test_an_executor_error_is_summarised_by_its_innermost_cause():
    assert error_summary(PythonException(MODEL_ERROR)) == (
        "RuntimeError: hashing_embedder asked to fail on text 'poison'"
    )


def test_a_server_start_failure_names_the_host_and_the_models_own_error():
    summary = error_summary(Py4JJavaError(START_ERROR))
    assert summary.startswith("TritonStartError: Triton server for model 'm:MODEL' on host node-1")
    assert summary.endswith(
        "<- ValueError: hashing_embedder option 'seconds_per_batch' must be >= 0, got -1.0"
    )
    assert "\n" not in summary and "org.apache" not in summary


def test_a_plain_error_is_its_own_summary_on_one_line():
    assert error_summary(JobConfigError("job setting 'model' must be\na reference")) == (
        "JobConfigError: job setting 'model' must be a reference"
    )
    assert error_summary(KeyboardInterrupt()) == "KeyboardInterrupt:"
    assert len(error_summary(ValueError("x" * 5000))) <= 600
