"""Every bad input is one line: through the real command lines, in a subprocess.

Each row runs a command and checks: its exit code, exactly one line on stderr
(`error: ...` matching the row's pattern), no traceback, and that nothing in
the user's folder was created or changed. Later features add their rows here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlm import config as config_lib
from jaxlm.experiments import load_configdict
from jaxlm.data import prepare as prepare_lib
from jaxlm.training import loop
from tests import forked, testdata

REPO = testdata.REPO
TINY = ['--config.model.num_layers=1', '--config.model.num_heads=2', '--config.model.d_model=16',
        '--config.model.d_ff=32', '--config.model.max_len=16', '--config.data.seq_len=16',
        '--config.data.batch_size=8', '--config.train.warmup_steps=1',
        '--config.train.sample_tokens=0']


def _files(root) -> dict[str, tuple[int, int]]:
  """Every path under root with its size and modification time."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.lstat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return out


@pytest.fixture(scope='module')
def user(tmp_path_factory):
  """A user's folder: text corpora, CSVs, a trained run, a file, a folder that is no run."""
  root = tmp_path_factory.mktemp('user')
  (root / 'corpus.txt').write_text('to be or not to be, that is the question\n' * 60)
  (root / 'latin1.txt').write_bytes('caf\xe9\n'.encode('latin-1') * 200)
  (root / 'empty.txt').write_text('')
  (root / 'ok.csv').write_text(''.join(f'"{i % 4 + 1}","title {i}","text {i}"\n'
                                       for i in range(40)))
  (root / 'short_row.csv').write_text('"1","a","b"\n"2","only"\n')
  (root / 'bad_label.csv').write_text('"1","a","b"\n"7","c","d"\n')
  (root / 'extra_col.csv').write_text('"1","a","b"\n"2","c","d","e"\n')
  (root / 'a_file').write_text('not a folder')
  (root / 'not_a_run').mkdir()
  (root / 'hf_broken').mkdir()
  (root / 'hf_broken' / 'config.json').write_text('{"model_type": "gpt2", "n_embd": ')
  (root / 'hf_truncated').mkdir()
  (root / 'hf_truncated' / 'config.json').write_text(json.dumps(
      {'model_type': 'gpt2', 'n_embd': 16, 'n_head': 2, 'n_layer': 1, 'n_positions': 16,
       'vocab_size': 64}))
  header = b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":'  # a header length, then it ends
  (root / 'hf_truncated' / 'model.safetensors').write_bytes(header)
  _hf_folders(root)
  # What importing a GPT-2 folder without tokenizer.json writes, less the checkpoint.
  from jaxlm import rundir
  from jaxlm.interop import hf
  rundir.write_config_dict(root / 'import_no_tokenizer',
                           config_lib.to_dict(hf.import_config(str(root / 'hf_truncated'))))
  (root / 'tasks').mkdir()  # an lm-eval task over a data file that is not there
  (root / 'tasks' / 'lost.yaml').write_text(
      f'task: lost_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n'
      f'    test: {root}/lost.jsonl\ntest_split: test\noutput_type: multiple_choice\n'
      'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: 0\n')
  _tokenizer_files(root)
  settings = {'model.num_layers': 1, 'model.num_heads': 2, 'model.d_model': 16,
              'model.d_ff': 32, 'model.max_len': 16, 'data.seq_len': 16, 'data.batch_size': 8,
              'data.source': 'files', 'data.train_files': str(root / 'corpus.txt'),
              'train.steps': 4, 'train.warmup_steps': 1, 'train.eval_every': 4,
              'train.eval_steps': 1, 'train.checkpoint_every': 4, 'train.sample_tokens': 0}
  c = config_lib.from_configdict(load_configdict(str(REPO / 'experiments/gpt_small.py'),
                                                 settings))
  loop.run(c, str(root / 'run'))
  prepare_lib.prepare(c.data, str(root / 'dataset'), workers=1, log=lambda m: None)
  return root


def _hf_folders(root) -> None:
  """Llama-family HF folders that are wrong in one way each (written without transformers)."""
  from safetensors.numpy import save_file

  from jaxlm.interop import hf_families
  llama = {'model_type': 'llama', 'hidden_size': 16, 'intermediate_size': 32,
           'num_hidden_layers': 1, 'num_attention_heads': 2, 'num_key_value_heads': 1,
           'max_position_embeddings': 16, 'vocab_size': 64, 'tie_word_embeddings': True}
  m = config_lib.ModelConfig(num_layers=1, num_heads=2, d_model=16, d_ff=24, max_len=16,
                             dropout=0.0, dtype='float32', vocab_size=64, vocab_multiple=1,
                             tie_embeddings=True, use_bias=False, num_kv_heads=1)
  tensors = {f'model.{k}': np.zeros(v, np.float32)  # d_ff 24 where the config says 32
             for k, v in hf_families.expected_shapes(m, 'llama').items()}
  for name, config, files in (
      ('hf_bert', {'model_type': 'bert'}, {}),
      ('hf_shapes', llama, {'model.safetensors': tensors}),
      ('hf_sharded', llama, {'model-00001-of-00002.safetensors': tensors})):
    (root / name).mkdir()
    (root / name / 'config.json').write_text(json.dumps(config))
    for file, t in files.items():
      save_file(t, str(root / name / file), metadata={'format': 'pt'})
  (root / 'hf_sharded' / 'model.safetensors.index.json').write_text(json.dumps(
      {'weight_map': {'model.norm.weight': 'model-00001-of-00002.safetensors',
                      'lm_head.weight': 'model-00002-of-00002.safetensors'}}))


def _tokenizer_files(root) -> None:
  """A tokenizer.json that is cut short, one without an end-of-document token, a bad ranks file."""
  import tokenizers
  (root / 'tokenizer_cut.json').write_text('{"version": "1.0", "model": ')
  (root / 'bad.tiktoken').write_bytes(b'IQ== 0\nthis is no ranks file\n')
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=260, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(['to be or not to be'], trainer)
  (root / 'no_eos').mkdir()
  tok.save(str(root / 'no_eos' / 'tokenizer.json'))


def _main(*args):
  return ['jaxlm.main', '--config=experiments/gpt_small.py', *TINY, *args]


def _files_main(user, *args):
  return _main('--config.data.source=files', f'--config.data.train_files={user}/corpus.txt',
               *args)


def _prepare(user, out, *args):
  return ['jaxlm.prepare', '--config=experiments/gpt_small.py', '--config.data.source=files',
          f'--config.data.train_files={user}/corpus.txt', f'--out={out}', *args]


def _finetune(user, *args):
  return ['jaxlm.finetune', '--config=experiments/agnews_classifier.py:csv', *TINY[:5],
          '--config.data.max_length=16', '--config.data.batch_size=8',
          '--config.train.warmup_steps=1', '--config.data.eval_holdout=0.25',
          f'--config.data.train_files={user}/ok.csv', *args]


# (id, argv builder (user folder -> module and flags), exit code, stderr pattern)
ROWS = [
    # Settings and flags.
    ('misspelled key (train)', lambda u: _main('--config.train.stpes=10'), 1,
     r'--config\.train\.stpes: unknown setting .stpes.; did you mean "steps"'),
    ('misspelled key (finetune)', lambda u: _finetune(u, '--config.train.stpes=10'), 1,
     r'--config\.train\.stpes: unknown setting .stpes.; did you mean "steps"'),
    ('misspelled section', lambda u: _main('--config.trian.steps=10'), 1,
     r'unknown setting .trian.; did you mean "train"'),
    ('misspelled experiment path',
     lambda u: ['jaxlm.main', '--config=experiments/gpt_smal.py'], 1,
     r'--config=experiments/gpt_smal\.py: no such file .*did you mean experiments/gpt_small\.py'),
    ('not a number', lambda u: _main('--config.train.steps=abc'), 1,
     r"--config\.train\.steps=abc: invalid literal for int"),
    ('unknown flag', lambda u: _main('--nosuchflag'), 1, r"Unknown command line flag 'nosuchflag'"),
    ('negative batch', lambda u: _files_main(u, '--config.data.batch_size=-8'), 1,
     r'data\.batch_size=-8 must be a positive integer'),
    ('seq_len above max_len', lambda u: _files_main(u, '--config.data.seq_len=32'), 1,
     r'data\.seq_len=32 exceeds model\.max_len=16'),
    ('heads do not divide d_model', lambda u: _files_main(u, '--config.model.num_heads=3'), 1,
     r'model\.num_heads=3 does not divide model\.d_model=16'),
    ('kv heads do not divide heads', lambda u: _files_main(u, '--config.model.num_kv_heads=3'),
     1, r'model\.num_kv_heads=3 does not divide model\.num_heads=2'),
    ('RoPE with an odd head dimension',
     lambda u: _files_main(u, '--config.model.positions=rope', '--config.model.head_size=5'), 1,
     r'model\.positions=rope needs an even head dimension, not 5'),
    ('zero stage 5', lambda u: _files_main(u, '--config.parallel.zero_stage=5'), 1,
     r'parallel\.zero_stage=5 must be 0, 1, 2 or 3'),
    ('mesh larger than the devices', lambda u: _files_main(u, '--config.parallel.data=16'), 1,
     r'parallel'),
    ('unknown tokenizer', lambda u: _files_main(u, '--config.data.tokenizer=words'), 1,
     r"data\.tokenizer='words' is not one of: char, byte, sentencepiece, huggingface"),
    ('tiktoken without a ranks file', lambda u: _main('--config.data.tokenizer=tiktoken'), 1,
     r'data\.tokenizer=tiktoken needs data\.tokenizer_file=PATH, a tiktoken ranks file'),
    ('bpe vocabulary below 257',
     lambda u: _main('--config.data.tokenizer=bpe', '--config.data.vocab_size=100'), 1,
     r'data\.tokenizer=bpe needs data\.vocab_size >= 257 \(the 256 bytes and <\|endoftext\|>\),'
     r' not 100'),
    ('negative tokenizer sample',
     lambda u: _main('--config.data.tokenizer=bpe', '--config.data.vocab_size=512',
                     '--config.data.tokenizer_sample_mb=-1'), 1,
     r'data\.tokenizer_sample_mb=-1 must be 0 \(4 KB per vocabulary entry\) or a number of MB'),
    ('tokenizer_file with a trained tokenizer',
     lambda u: _main(f'--config.data.tokenizer_file={u}/bad.tiktoken'), 1,
     r'data\.tokenizer_file=\S+ is read only with data\.tokenizer=huggingface or tiktoken, not'
     r' char'),
    ('planner: invalid setting',
     lambda u: ['jaxlm.plan', '--config=experiments/gpt_small.py', '--devices=2',
                '--config.parallel.zero_stage=5'], 1,
     r'parallel\.zero_stage=5 must be 0, 1, 2 or 3'),
    # Files and folders.
    ('missing data file', lambda u: _main('--config.data.source=files',
                                          f'--config.data.train_files={u}/nope*.txt'), 1,
     r'data\.train_files'),
    ('empty data file', lambda u: _main('--config.data.source=files',
                                        f'--config.data.train_files={u}/empty.txt'), 1,
     r'empty|no text'),
    ('data file not UTF-8', lambda u: _main('--config.data.source=files',
                                            f'--config.data.train_files={u}/latin1.txt'), 1,
     r'not UTF-8'),
    ('run folder is a file', lambda u: _files_main(u, f'--workdir={u}/a_file'), 1,
     r'--workdir=.*a_file is a file, not a folder'),
    ('run folder under a file', lambda u: _files_main(u, f'--workdir={u}/a_file/run'), 1,
     r'--workdir=.*lies under .*a_file, which is a file'),
    ('run folder not writable', lambda u: _files_main(u, '--workdir=/proc/jaxlm_run'), 1,
     r'--workdir=/proc/jaxlm_run: cannot create it in /proc'),
    ('incompatible resume', lambda u: _files_main(u, f'--workdir={u}/run',
                                                  '--config.model.d_model=32'), 1,
     r'holds a checkpoint \(step 4\) of a different model: model\.d_model=16 there, 32 now'),
    ('tokenizer_file missing',
     lambda u: _files_main(u, '--config.data.tokenizer=tiktoken',
                           f'--config.data.tokenizer_file={u}/nope.tiktoken'), 1,
     r'data\.tokenizer_file=\S+nope\.tiktoken: no such file; pass the path of a tiktoken ranks'
     r' file'),
    ('ranks file not base64 lines',
     lambda u: _files_main(u, '--config.data.tokenizer=tiktoken',
                           f'--config.data.tokenizer_file={u}/bad.tiktoken'), 1,
     r'data\.tokenizer_file=\S+bad\.tiktoken: line 2 is not `base64token rank`'),
    ('tokenizer.json cut short',
     lambda u: _files_main(u, '--config.data.tokenizer=huggingface',
                           f'--config.data.tokenizer_file={u}/tokenizer_cut.json'), 1,
     r'data\.tokenizer_file=\S+tokenizer_cut\.json: tokenizer\.json is not a Hugging Face'
     r' tokenizer the tokenizers library reads'),
    ('tokenizer.json without an end-of-document token',
     lambda u: _files_main(u, '--config.data.tokenizer=huggingface',
                           f'--config.data.tokenizer_file={u}/no_eos/tokenizer.json'), 1,
     r'has none of the end-of-document tokens <\|endoftext\|> .*; write \{"eos_token_id": ID\}'
     r' to \S+no_eos/generation_config\.json'),
    ('bpe vocabulary larger than the corpus gives',
     lambda u: _files_main(u, '--config.data.tokenizer=bpe', '--config.data.vocab_size=5000'), 1,
     r'data\.vocab_size=5000: byte-level BPE finds only \d+ tokens in this corpus; lower'
     r' data\.vocab_size to at most \d+'),
    # Classification data.
    ('CSV short row', lambda u: _finetune(u, f'--config.data.train_files={u}/short_row.csv'), 1,
     r'short_row\.csv:2: 2 column\(s\)'),
    ('CSV unknown label', lambda u: _finetune(u, f'--config.data.train_files={u}/bad_label.csv'),
     1, r"bad_label\.csv:2: label '7' is not one of data\.csv_labels"),
    ('CSV extra column', lambda u: _finetune(u, f'--config.data.train_files={u}/extra_col.csv'),
     1, r'extra_col\.csv:2: 4 columns, but line 1 has 3'),
    ('missing CSV', lambda u: _finetune(u, f'--config.data.train_files={u}/nope.csv'), 1,
     r'nope\.csv: no such file'),
    # Inference on a run folder.
    ('sample: no such run', lambda u: ['jaxlm.sample', f'--workdir={u}/nope'], 1,
     r'--workdir=.*nope does not exist'),
    ('evaluate: not a run', lambda u: ['jaxlm.evaluate', f'--workdir={u}/not_a_run'], 1,
     r'--workdir=.*not_a_run holds no'),
    ('no command', lambda u: ['jaxlm', 'bogus'], 1, r"name a command \(got 'bogus'\)"),
    # The lm-eval harness on a run folder.
    ('lm_eval: no such run', lambda u: ['jaxlm.lm_eval', f'--workdir={u}/nope',
                                        '--tasks=hellaswag'], 1,
     r'--workdir=.*nope does not exist'),
    ('lm_eval: run without tokenizer',
     lambda u: ['jaxlm.lm_eval', f'--workdir={u}/import_no_tokenizer', '--tasks=hellaswag'], 1,
     r'import_no_tokenizer has no tokenizer .*import again from a Hugging Face folder that has'
     r' tokenizer\.json'),
    ('lm_eval: unknown task',
     lambda u: ['jaxlm.lm_eval', f'--workdir={u}/run', '--tasks=hellaswagg'], 1,
     r"--tasks: 'hellaswagg' is not an lm-eval task, group or tag; did you mean hellaswag"),
    ('lm_eval: task folder missing',
     lambda u: ['jaxlm.lm_eval', f'--workdir={u}/run', '--tasks=my_task',
                f'--include_path={u}/my_tasks'], 1,
     r'--include_path=.*my_tasks is not a folder .*pass a folder of task YAML files'),
    ('lm_eval: task data missing',
     lambda u: ['jaxlm.lm_eval', f'--workdir={u}/run', '--tasks=lost_mc',
                f'--include_path={u}/tasks'], 1,
     r"--tasks=lost_mc: a task's data could not be loaded \(FileNotFoundError: .*lost\.jsonl"),
    # Hugging Face folders.
    ('HF config.json not JSON', lambda u: ['jaxlm.hf', 'import', f'--hf_dir={u}/hf_broken',
                                           f'--workdir={u}/hf_run'], 1,
     r'hf_broken/config\.json is not valid JSON .*save the model again'),
    ('HF safetensors truncated', lambda u: ['jaxlm.hf', 'import', f'--hf_dir={u}/hf_truncated',
                                            f'--workdir={u}/hf_run'], 1,
     r'model\.safetensors is not a readable safetensors file .*truncated or corrupt'),
    ('HF architecture unsupported', lambda u: ['jaxlm.hf', 'import', f'--hf_dir={u}/hf_bert',
                                               f'--workdir={u}/hf_run'], 1,
     r"model_type='bert' is not supported; jaxlm reads gpt2, llama, mistral, qwen2"),
    ('HF shapes disagree with config',
     lambda u: ['jaxlm.hf', 'import', f'--hf_dir={u}/hf_shapes', f'--workdir={u}/hf_run'], 1,
     r'tensor layers\.0\.mlp\.gate_proj\.weight has shape \(24, 16\), config\.json implies'
     r' \(32, 16\)'),
    ('HF shard missing',
     lambda u: ['jaxlm.hf', 'import', f'--hf_dir={u}/hf_sharded', f'--workdir={u}/hf_run'], 1,
     r'names model-00002-of-00002\.safetensors, which \S+ lacks; download the missing shard'),
    # Prepared datasets (jaxlm.prepare, data.dataset_dir).
    ('prepare: out is a file', lambda u: _prepare(u, f'{u}/a_file'), 1,
     r'--out=\S+a_file is a file; pass a folder'),
    ('prepare: out holds other files', lambda u: _prepare(u, u), 1,
     r'holds other files; pass a new or empty folder \(nothing in it is touched\)'),
    ('prepare: glob matches nothing',
     lambda u: _prepare(u, f'{u}/../never', f'--config.data.train_files={u}/none*.txt'), 1,
     r'data\.train_files=\S+none\*\.txt. matches no files'),
    ('prepare: JSONL line not JSON',
     lambda u: _prepare(u, f'{u}/../never', '--config.data.file_format=jsonl'), 1,
     r'corpus\.txt: the line at byte 0 is not JSON .*data\.file_format=lines'),
    ('prepare: document longer than a shard',
     lambda u: _prepare(u, f'{u}/../long_doc', '--shard_tokens=100'), 1,
     r'has [0-9,]+ tokens, more than a shard holds \(--shard_tokens=100\)'),
    ('dataset_dir not prepared',
     lambda u: _files_main(u, f'--config.data.dataset_dir={u}/not_a_run'), 1,
     r'data\.dataset_dir=\S+not_a_run holds no manifest\.json; run python -m jaxlm\.prepare'),
    ('dataset_dir of other settings',
     lambda u: _files_main(u, f'--config.data.dataset_dir={u}/dataset',
                           '--config.data.tokenizer=byte'), 1,
     r'does not match this run: tokenizer\.kind was "char", now "byte"'),
    ('sample: tokens not integers',
     lambda u: ['jaxlm.sample', f'--workdir={u}/run', '--tokens=5,x'], 1,
     r"--tokens='5,x' is not comma-separated integers"),
]


def _run(module_args, cwd, timeout=300):
  return forked.run_module(module_args, cwd, timeout=timeout)  # `python -m`, imports warm


@pytest.mark.parametrize('name, argv, code, pattern', ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(user, name, argv, code, pattern):
  before = _files(user)
  out = _run(argv(user), REPO)
  lines = out.stderr.strip().splitlines()
  assert out.returncode == code, (name, out.stderr[-2000:])
  assert len(lines) == 1 and lines[0].startswith('error: '), (name, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr and 'Traceback' not in out.stdout
  import re
  assert re.search(pattern, lines[0]), (pattern, lines[0])
  assert _files(user) == before, name  # nothing created or changed


def test_resume_with_fewer_steps_than_the_checkpoint_says_so_and_exits_0(user):
  before = _files(user / 'run' / 'checkpoints')
  out = _run(_files_main(user, f'--workdir={user}/run', '--config.train.steps=2'), REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'holds checkpoint 4, at or past train.steps=2: nothing to train' in out.stdout
  assert 'train step' not in out.stdout and out.stderr.strip() == ''
  assert _files(user / 'run' / 'checkpoints') == before


def test_a_rerun_after_fixing_bad_data_trains_on_the_fixed_data(tmp_path):
  data = tmp_path / 'corpus.txt'
  data.write_bytes('caf\xe9 au lait\n'.encode('latin-1') * 100)
  cmd = _main('--config.data.source=files', f'--config.data.train_files={data}',
              f'--workdir={tmp_path}/run', '--config.train.steps=2',
              '--config.train.eval_every=2', '--config.train.eval_steps=1',
              '--config.train.checkpoint_every=2', '--config.data.tokenizer=char')
  out = _run(cmd, REPO)
  assert out.returncode == 1 and 'not UTF-8' in out.stderr
  assert not (tmp_path / 'run').exists()  # a failed start leaves no folder
  data.write_text('xyz abc\n' * 1000)
  out = _run(cmd, REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'vocab 9' in out.stdout  # x y z ' ' a b c '\n' and the unknown id


def test_offline_tfds_downloads_fail_fast_in_one_line(tmp_path):
  """Pretraining and fine-tuning: a dataset that must download, with no network."""
  env = dict(os.environ, HOME=str(tmp_path), TFDS_DATA_DIR=str(tmp_path / 'tfds'),
             http_proxy='http://127.0.0.1:9', https_proxy='http://127.0.0.1:9')
  for argv in (['jaxlm.finetune', '--config=experiments/agnews_classifier.py'],
               _main('--config.data.dataset=imdb_reviews', '--config.data.eval_split=test')):
    out = subprocess.run([sys.executable, '-m', *argv, f'--workdir={tmp_path}/run'], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-2000:]
    assert 'cannot be reached' in lines[0] and 'offline' in lines[0], lines[0]
    assert not (tmp_path / 'run').exists()


def test_docs_list_every_row():
  page = (REPO / 'docs' / 'reliability.md').read_text()
  missing = [name for name, *_ in ROWS if f'| {name} |' not in page]
  assert missing == [], 'add these to docs/reliability.md'


def test_a_prompt_with_unseen_characters_is_one_warning_line(user):
  out = _run(['jaxlm.sample', f'--workdir={user}/run', '--prompt=to be \u00e9\u00e9 or',
              '--max_new_tokens=2'], REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  warnings = [x for x in out.stderr.splitlines() if x.startswith('warning:')]
  assert warnings == ["warning: --prompt has 2 character(s) the tokenizer never saw in"
                      " training ('\u00e9'); each became the unknown id"], out.stderr


def test_resuming_past_a_truncated_newest_checkpoint_is_one_line(user, tmp_path):
  settings = {'data.source': 'files', 'data.train_files': str(user / 'corpus.txt'),
              'train.steps': 4, 'train.eval_every': 4, 'train.eval_steps': 1,
              'train.checkpoint_every': 2, 'train.sample_tokens': 0, 'model.num_layers': 1,
              'model.num_heads': 2, 'model.d_model': 16, 'model.d_ff': 32, 'model.max_len': 16,
              'data.seq_len': 16, 'data.batch_size': 8, 'train.warmup_steps': 1}
  c = config_lib.from_configdict(load_configdict(str(REPO / 'experiments/gpt_small.py'),
                                                 settings))
  loop.run(c, str(tmp_path / 'run'))
  for root, _, files in os.walk(tmp_path / 'run' / 'checkpoints' / '4' / 'state'):
    for name in files:  # truncated, as by a full disk
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  out = _run(_files_main(user, f'--workdir={tmp_path}/run', '--config.train.steps=6',
                         '--config.train.checkpoint_every=2', '--config.train.eval_every=6',
                         '--config.train.eval_steps=1'), REPO)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stderr.strip() == '', out.stderr[-3000:]  # no Orbax or asyncio tracebacks
  lines = [x for x in out.stdout.splitlines() if 'checkpoint 4 is unreadable' in x]
  assert len(lines) == 1 and 'resuming from checkpoint 2' in lines[0], out.stdout[-2000:]
