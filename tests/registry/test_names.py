import pytest

from registry import InvalidName, parse_name


@pytest.mark.parametrize(
    "text, ns, name, version",
    [
        ("anime", None, "anime", None),
        ("calligraphy/mifu", "calligraphy", "mifu", None),
        ("calligraphy/mifu@3", "calligraphy", "mifu", 3),
        ("a.b_c-d/x9@latest", "a.b_c-d", "x9", "latest"),
        ("0day", None, "0day", None),
    ],
)
def test_valid_names(text, ns, name, version):
    n = parse_name(text)
    assert (n.namespace, n.name, n.version) == (ns, name, version)
    assert str(n) == (text if version not in ("latest",) else text.split("@")[0])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../x", "'..' is not allowed"),
        ("a/b/c", "at most one '/'"),
        ("has space", "is not allowed"),
        ("Upper", "is not allowed"),
        ("a//b", "empty part"),
        ("/abs", "empty part"),
        ("x/", "empty part"),
        ("con", "reserved device name"),
        ("ns/com1.txt", "reserved device name"),
        ("trailing.", "may not end with '.'"),
        ("-dash", "is not allowed"),
        ("x@0", "invalid version"),
        ("x@-1", "invalid version"),
        ("x@v2", "invalid version"),
        ("x@", "invalid version"),
        ("a" * 65, "longer than 64"),
        ("书法", "is not allowed"),
        ("x\x00y", "is not allowed"),
    ],
)
def test_invalid_names_name_the_problem(text, fragment):
    with pytest.raises(InvalidName) as exc:
        parse_name(text)
    assert fragment in exc.value.message
    assert exc.value.exit_code == 2


def test_version_not_allowed_where_a_new_name_is_expected():
    with pytest.raises(InvalidName, match="version"):
        parse_name("a/b@2", allow_version=False)
