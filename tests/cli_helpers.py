"""Running an example script's main() as the shell would, for the CLI tests."""
from tinyunet.cli import run_cli


def run_example(main, argv, capsys):
    """(exit status, stdout, stderr) of run_cli(main, argv): a UserError is status 2 and one
    `error:` line on stderr, as from the shell."""
    try:
        run_cli(main, [str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
