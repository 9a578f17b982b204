"""TFDS offline: the bundled tiny_shakespeare, and downloads that fail fast without a network."""

import hashlib
import http.server
import os
import pathlib
import socket
import threading
import time

import pytest

import jaxlm.data
from jaxlm.config import ConfigError
from jaxlm.data import sources
from tests.testdata import data_config

SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'  # TFDS's checksums.tsv
PROXIES = ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY')


def _no_network(monkeypatch):
  """Every request goes to a proxy on a closed local port, as with no network."""
  for name in PROXIES:
    monkeypatch.setenv(name, 'http://127.0.0.1:9')
  for name in ('no_proxy', 'NO_PROXY', 'all_proxy', 'ALL_PROXY'):
    monkeypatch.delenv(name, raising=False)


def test_the_package_ships_tfds_download_of_tiny_shakespeare():
  folder = pathlib.Path(sources.bundled_manual_dir('tiny_shakespeare'))
  assert folder.is_relative_to(pathlib.Path(jaxlm.data.__file__).parent)  # package data
  data = (folder / 'input.txt').read_bytes()
  assert len(data) == 1_115_394 and hashlib.sha256(data).hexdigest() == SHA256
  assert {'README.md', 'LICENSE'} <= set(os.listdir(folder))
  assert sources.bundled_manual_dir('imdb_reviews') is None


def test_without_manual_dir_tfds_prepares_tiny_shakespeare_from_the_bundled_copy(
    tmp_path, monkeypatch, capsys):
  _no_network(monkeypatch)
  cfg = data_config(manual_dir='', tfds_data_dir=str(tmp_path))
  train = list(sources.documents(cfg, 'train'))
  valid = list(sources.documents(cfg, 'validation'))  # prepared: read, not prepared again
  assert len(train[0]) == 1_003_854 and len(valid[0]) == 55_770
  lines = [line for line in capsys.readouterr().out.splitlines() if 'bundled' in line]
  assert lines == [f'data: preparing TFDS tiny_shakespeare from the copy bundled with jaxlm'
                   f' ({sources.bundled_manual_dir("tiny_shakespeare")}), not a download']
  assert not [p for p in tmp_path.glob('downloads/**/*') if p.is_file()]  # nothing fetched


def test_a_download_without_network_fails_at_once_in_one_line(tmp_path, monkeypatch):
  _no_network(monkeypatch)
  cfg = data_config(dataset='ag_news_subset', text_key='description', manual_dir='',
                    tfds_data_dir=str(tmp_path))  # not prepared there: it must download
  start = time.perf_counter()
  with pytest.raises(ConfigError) as info:
    next(iter(sources.documents(cfg, 'train')))
  seconds = time.perf_counter() - start
  message = str(info.value)
  assert message.startswith('TFDS ag_news_subset must download from drive.google.com, which'
                            ' cannot be reached (ProxyError); offline, set data.manual_dir')
  assert 'data.tfds_data_dir' in message and 'data.source=files' in message
  assert '\n' not in message
  assert seconds < 30, seconds  # TFDS's own retries took 212 s here
  assert not (tmp_path / 'downloads').exists()


class _Ok(http.server.BaseHTTPRequestHandler):
  def do_HEAD(self):  # http.server names its handlers so
    self.send_response(200)
    self.end_headers()

  def log_message(self, *args):
    pass


def test_the_probe_tells_an_answering_server_from_a_closed_port(monkeypatch):
  for name in PROXIES:
    monkeypatch.delenv(name, raising=False)
  server = http.server.HTTPServer(('127.0.0.1', 0), _Ok)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    assert sources._unreachable(f'http://127.0.0.1:{server.server_port}/f.zip') is None
  finally:
    server.shutdown()
    server.server_close()
  with socket.socket() as s:  # a port nothing listens on
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  assert sources._unreachable(f'http://127.0.0.1:{port}/f.zip') == 'ConnectionError'


def test_a_prepared_tfds_dataset_is_described_without_tensorflow(monkeypatch):
  # A run's fingerprint of a prepared TFDS dataset comes from its dataset_info.json:
  # the same parts TFDS itself reports, and TensorFlow is not imported (about 8 s and
  # 600 MB a run when its tokens are already prepared).
  import subprocess
  import sys
  from jaxlm.data import pieces
  cfg = data_config()
  sources.prepared_tfds_builder(cfg)  # the session's copy, prepared
  fast = pieces.source_parts(cfg)
  monkeypatch.setattr(sources, 'prepared_tfds_info', lambda cfg: None)
  assert pieces.source_parts(cfg) == fast
  assert pieces.source_parts(data_config(train_split='train[:50%]')) != fast  # TFDS's slicing
  code = ('import sys; from jaxlm.data import pieces; from tests.testdata import data_config;'
          f' cfg = data_config(tfds_data_dir={cfg.tfds_data_dir!r});'
          f' assert pieces.source_parts(cfg) == {fast!r};'
          " assert 'tensorflow' not in sys.modules, 'imported'")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          check=False, env={**os.environ, 'PYTHONPATH': os.getcwd()})
  assert result.returncode == 0, result.stderr[-2000:]
