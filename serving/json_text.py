"""JSON text the way TF Serving's REST API reads and quotes it (rapidjson's rules).

Requests are parsed like rapidjson with kParseNanAndInfFlag and kParseStopWhenDoneFlag:
NaN/Infinity are accepted and trailing text after the document is ignored; parse errors use
rapidjson's texts ("JSON Parse error: ..."). TF Serving's messages embed the offending JSON value as
rapidjson's PrettyWriter prints it (single-line arrays, 4-space indents, cut after 256 bytes);
`debug_string` reproduces that so messages match byte for byte (util/json_tensor.cc).
"""

from __future__ import annotations

import decimal
import json
import math
import re

from serving import errors
from serving import tensors

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# --- Parsing -------------------------------------------------------------------------------------

# Python's decoder keeps integers exact; rapidjson keeps those outside [INT64_MIN, UINT64_MAX]
# as doubles. That only shows in messages (debug_string) and in type checks, which both treat such
# integers as doubles (a parse_int hook would do it at parse time, at 5x the parse cost).
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")

# Python's json messages -> rapidjson's GetParseError_En() text.
_PARSE_ERRORS = (
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
)


def _innermost_container(text: str, pos: int) -> str:
  """'{' or '[': the container open at `pos` (to tell rapidjson's two missing-comma errors)."""
  stack = []
  in_string = escape = False
  for ch in text[:pos]:
    if in_string:
      if escape:
        escape = False
      elif ch == "\\":
        escape = True
      elif ch == '"':
        in_string = False
    elif ch == '"':
      in_string = True
    elif ch in "[{":
      stack.append(ch)
    elif ch in "]}" and stack:
      stack.pop()
  return stack[-1] if stack else "{"


def parse_json(body: bytes):
  """ParseJson(): the request document (a dict), or ServingError "JSON Parse error: ..."."""
  if not body:
    raise errors.invalid_argument("JSON Parse error: The document is empty")
  text = body.decode("utf-8", "surrogateescape")
  start = _WS.match(text).end()
  if start == len(text):
    raise errors.invalid_argument(
        f"JSON Parse error: The document is empty. at offset: {len(body)}")
  try:
    doc, _ = _DECODER.raw_decode(text, start)
  except json.JSONDecodeError as e:
    message = "Invalid value."
    for python_text, rapidjson_text in _PARSE_ERRORS:
      if e.msg.startswith(python_text):
        message = rapidjson_text
        break
    else:
      if e.msg.startswith("Expecting ',' delimiter"):
        message = ("Missing a comma or '}' after an object member."
                   if _innermost_container(text, e.pos) == "{" else
                   "Missing a comma or ']' after an array element.")
    offset = len(text[:e.pos].encode("utf-8", "surrogateescape"))
    raise errors.invalid_argument(f"JSON Parse error: {message} at offset: {offset}") from None
  except RecursionError:
    raise errors.invalid_argument("JSON Parse error: Invalid value. at offset: 0") from None
  if not isinstance(doc, dict):
    raise format_error(doc, "Is not object")
  return doc


# --- rapidjson-compatible debug strings ----------------------------------------------------------

_MAX_DEBUG_BYTES = 256


def escape_string(s: str) -> str:
  """rapidjson Writer::WriteString(): escapes '"', '\\' and control characters only."""
  return json.dumps(s, ensure_ascii=False)


def rapidjson_double(value: float) -> str | None:
  """rapidjson Writer::WriteDouble() (Grisu2 shortest digits + Prettify()); None for NaN/Inf,
  which rapidjson's default writer refuses to write."""
  if math.isnan(value) or math.isinf(value):
    return None
  if value == 0:
    return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
  sign, digit_tuple, exponent = decimal.Decimal(repr(abs(value))).as_tuple()
  digits = "".join(map(str, digit_tuple)).rstrip("0")
  exponent += len(digit_tuple) - len(digits)
  digits = digits.lstrip("0") or "0"
  prefix = "-" if value < 0 else ""
  length, k = len(digits), exponent
  kk = length + k
  if 0 <= k and kk <= 21:
    out = digits + "0" * k + ".0"
  elif 0 < kk <= 21:
    out = digits[:kk] + "." + digits[kk:]
  elif -6 < kk <= 0:
    out = "0." + "0" * (-kk) + digits
  elif kk < -324:
    out = "0.0"
  elif length == 1:
    out = f"{digits}e{kk - 1}"
  else:
    out = f"{digits[0]}.{digits[1:]}e{kk - 1}"
  return prefix + out


class _LimitedPrettyWriter:
  """rapidjson PrettyWriter(kFormatSingleLineArray) behind json_tensor.cc's JsonWriterWithLimit:
  every event first checks that fewer than 256 bytes were written, else stops the walk."""

  def __init__(self, limit: int):
    self.parts: list[str] = []
    self.size = 0
    self.limit = limit
    self.levels: list[list] = []  # [in_array, value_count]

  def _put(self, s: str) -> None:
    self.parts.append(s)
    self.size += len(s.encode("utf-8", "surrogateescape"))

  def _prefix(self) -> None:
    if not self.levels:
      return
    level = self.levels[-1]
    if level[0]:
      if level[1] > 0:
        self._put(", ")
    else:
      if level[1] > 0:
        self._put(",\n" if level[1] % 2 == 0 else ": ")
      else:
        self._put("\n")
      if level[1] % 2 == 0:
        self._put(" " * (4 * len(self.levels)))
    level[1] += 1

  def walk(self, value) -> bool:
    if self.size >= self.limit:
      return False
    if isinstance(value, dict):
      self._prefix()
      self._put("{")
      self.levels.append([False, 0])
      for key, item in value.items():
        if self.size >= self.limit:
          return False
        self._prefix()
        self._put(escape_string(key))
        if not self.walk(item):
          return False
      if self.size >= self.limit:
        return False
      empty = self.levels.pop()[1] == 0
      if not empty:
        self._put("\n" + " " * (4 * len(self.levels)))
      self._put("}")
      return True
    if isinstance(value, list):
      self._prefix()
      self._put("[")
      self.levels.append([True, 0])
      for item in value:
        if not self.walk(item):
          return False
      if self.size >= self.limit:
        return False
      self.levels.pop()
      self._put("]")
      return True
    self._prefix()
    if value is None:
      self._put("null")
    elif value is True:
      self._put("true")
    elif value is False:
      self._put("false")
    elif isinstance(value, int) and INT64_MIN <= value <= UINT64_MAX:
      self._put(str(value))
    elif isinstance(value, int):  # rapidjson holds it as a double
      text = rapidjson_double(float(value))
      if text is None:
        return False
      self._put(text)
    elif isinstance(value, float):
      text = rapidjson_double(value)
      if text is None:
        return False
      self._put(text)
    else:
      self._put(escape_string(value))
    return True


def debug_string(value) -> str:
  """JsonValueToDebugString(): how TF Serving's messages quote a JSON value."""
  writer = _LimitedPrettyWriter(_MAX_DEBUG_BYTES)
  writer.walk(value)
  return "".join(writer.parts)


def type_string(value) -> str:
  """JsonTypeString()."""
  if value is None:
    return "Null"
  if value is True:
    return "True"
  if value is False:
    return "False"
  if isinstance(value, dict):
    return "Object"
  if isinstance(value, list):
    return "Array"
  if isinstance(value, str):
    return "String"
  return "Number"


def format_error(value, *parts: str) -> errors.ServingError:
  return errors.invalid_argument(f"JSON Value: {debug_string(value)} " + "".join(parts))


def type_error(value, enum_: int) -> errors.ServingError:
  return errors.invalid_argument(
      f"JSON Value: {debug_string(value)} Type: {type_string(value)} is not of expected type: "
      f"{tensors.dtype_string(enum_)}")

