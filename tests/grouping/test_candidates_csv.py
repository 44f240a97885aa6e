"""Candidate CSV files: the layout `network,cost,<task>,...` with empty cells for unsolved
tasks, test rows matched to validation rows by network, and every malformed input refused with
a message naming the file, row, network and value."""

import numpy as np
import pytest

from mtsys import errors
from mtsys.grouping import candidates_csv

_GOOD = """network,cost,a,b,c
abc,1,0.5,0.25,1.5
ab,1,0.4,0.2,

c/2,0.5,,,1.25
"""


def test_reads_names_costs_and_losses_with_empty_cells_as_unsolved(tmp_path):
  path = tmp_path / "val.csv"
  path.write_text(_GOOD)
  c = candidates_csv.read(str(path))
  assert c.tasks == ("a", "b", "c")
  assert c.names == ("abc", "ab", "c/2")
  assert c.costs.tolist() == [1, 1, 0.5]
  np.testing.assert_array_equal(
      c.losses, [[0.5, 0.25, 1.5], [0.4, 0.2, np.nan], [np.nan, np.nan, 1.25]])


def test_spaces_and_crlf_are_tolerated():
  text = "network, cost ,a,b\r\n x ,1, 0.5 ,\r\ny,0.5,,0.25\r\n"
  c = candidates_csv.parse(text, "t.csv")
  assert c.names == ("x", "y") and c.tasks == ("a", "b")
  assert c.losses[0, 0] == 0.5 and np.isnan(c.losses[0, 1])


@pytest.mark.parametrize("text, message", [
    ("", "v.csv: empty file; expected a header 'network,cost,<task>,...'"),
    ("name,cost,a\nx,1,0.1\n",
     "v.csv: header starts with 'name,cost'; expected 'network,cost,<task>,...'"),
    ("network,cost\nx,1\n",
     "v.csv: empty task list: the header names no task column after 'network,cost'"),
    ("network,cost,a,,b\n", "v.csv: header column 4 has no task name"),
    ("network,cost,a,b,a\n", "v.csv: duplicate task column 'a'"),
    ("network,cost,a\n", "v.csv: no candidate rows after the header"),
    ("network,cost,a,b\nx,1,0.1\n",
     "v.csv: row 2 has 3 cells; expected 4 (network, cost and 2 tasks)"),
    ("network,cost,a\n,1,0.1\n", "v.csv: row 2 has no network name"),
    ("network,cost,a\nx,1,0.1\ny,1,0.2\nx,0.5,0.3\n",
     "v.csv: duplicate network 'x' (rows 2 and 4)"),
    ("network,cost,a\nx,abc,0.1\n",
     "v.csv: row 2 (network 'x'): bad cost 'abc'; expected a positive number"),
    ("network,cost,a\nx,0,0.1\n",
     "v.csv: row 2 (network 'x'): bad cost '0'; expected a positive number"),
    ("network,cost,a\nx,-1,0.1\n",
     "v.csv: row 2 (network 'x'): bad cost '-1'; expected a positive number"),
    ("network,cost,a\nx,,0.1\n",
     "v.csv: row 2 (network 'x'): bad cost ''; expected a positive number"),
    ("network,cost,a\nx,inf,0.1\n",
     "v.csv: row 2 (network 'x'): bad cost 'inf'; expected a positive number"),
    ("network,cost,a,b\nx,1,0.1,NaN\n",
     "v.csv: row 2 (network 'x'): bad loss 'NaN' for task 'b'; expected a non-negative number, "
     "or an empty cell where the network does not solve the task"),
    ("network,cost,a,b\nx,1,-0.5,0.1\n",
     "v.csv: row 2 (network 'x'): bad loss '-0.5' for task 'a'; expected a non-negative "
     "number, or an empty cell where the network does not solve the task"),
    ("network,cost,a,b\nx,1,0.1,inf\n",
     "v.csv: row 2 (network 'x'): bad loss 'inf' for task 'b'; expected a non-negative "
     "number, or an empty cell where the network does not solve the task"),
    ("network,cost,a,b\nx,1,0.1,high\n",
     "v.csv: row 2 (network 'x'): bad loss 'high' for task 'b'; expected a non-negative "
     "number, or an empty cell where the network does not solve the task"),
    ("network,cost,a,b\nx,1,0.1,0.2\ny,1,,\n",
     "v.csv: row 3 (network 'y') solves no task: every loss cell is empty"),
    ("network,cost,a,b\nx,1,0.1,\n", "v.csv: task 'b' is solved by no network (its column is "
     "empty)"),
])
def test_malformed_files_are_refused_by_name(text, message):
  with pytest.raises(errors.DataError) as err:
    candidates_csv.parse(text, "v.csv")
  assert str(err.value) == message


def test_missing_and_directory_paths(tmp_path):
  with pytest.raises(errors.DataFileNotFoundError) as err:
    candidates_csv.read(str(tmp_path / "nope.csv"))
  assert str(err.value) == f"Candidates file {tmp_path / 'nope.csv'} does not exist"
  with pytest.raises(errors.DataError, match="is a directory; expected a CSV file$"):
    candidates_csv.read(str(tmp_path))


def test_test_rows_are_matched_by_network_in_any_order(tmp_path):
  validation = candidates_csv.parse(_GOOD, "val.csv")
  path = tmp_path / "test.csv"
  path.write_text("network,cost,c,a,b\nc/2,0.5,1.3,,\nabc,1,1.6,0.6,0.3\nab,1,,0.45,0.22\n")
  test = candidates_csv.read_test(str(path), validation)
  assert test.names == validation.names and test.tasks == validation.tasks
  np.testing.assert_array_equal(
      test.losses, [[0.6, 0.3, 1.6], [0.45, 0.22, np.nan], [np.nan, np.nan, 1.3]])


@pytest.mark.parametrize("text, error, message", [
    ("network,cost,a,b\nabc,1,0.5,0.2\nab,1,0.4,0.2\n", errors.DataError,
     "t.csv: missing task 'c': no column for it, and the validation candidates have one"),
    ("network,cost,a,b,c,d\nabc,1,0.5,0.2,1,1\n", errors.UnknownTaskError,
     "t.csv: unknown task 'd'; expected one of the validation candidates' tasks [a, b, c]"),
    ("network,cost,a,b,c\nabc,1,0.5,0.2,1\nab,1,0.4,0.2,\n", errors.DataError,
     "t.csv: missing network 'c/2' of the validation candidates"),
    ("network,cost,a,b,c\nabc,1,0.5,0.2,1\nab,1,0.4,0.2,\nc/2,0.5,,,1\nd,1,,,1\n",
     errors.DataError, "t.csv: network 'd' is not among the validation candidates"),
    ("network,cost,a,b,c\nabc,1,0.5,0.2,1\nab,1,0.4,0.2,\nc/2,1,,,1\n", errors.DataError,
     "t.csv: network 'c/2' costs 1 here and 0.5 in the validation candidates"),
    ("network,cost,a,b,c\nabc,1,0.5,0.2,1\nab,1,0.4,0.2,0.3\nc/2,0.5,,,1\n", errors.DataError,
     "t.csv: network 'ab' has a loss for task 'c' here and none in the validation candidates"),
    ("network,cost,a,b,c\nabc,1,0.5,,1\nab,1,0.4,0.2,\nc/2,0.5,,,1\n", errors.DataError,
     "t.csv: network 'abc' has no loss for task 'b' here and one in the validation candidates"),
    ("network,cost,a,b,c\nabc,1,0.5,0.2,nan\nab,1,0.4,0.2,\nc/2,0.5,,,1\n", errors.DataError,
     "t.csv: row 2 (network 'abc'): bad loss 'nan' for task 'c'; expected a non-negative "
     "number, or an empty cell where the network does not solve the task"),
])
def test_test_files_that_do_not_match_are_refused_by_name(tmp_path, text, error, message):
  validation = candidates_csv.parse(_GOOD, "val.csv")
  path = tmp_path / "t.csv"
  path.write_text(text)
  with pytest.raises(error) as err:
    candidates_csv.read_test(str(path), validation)
  assert str(err.value) == message.replace("t.csv", str(path))
