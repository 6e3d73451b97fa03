"""The AST walk that finds which ``tensorrt`` and cuda-python runtime names a Python file uses.

``collect_source`` runs it on one file's text; ``surface.py`` runs it over the project and looks every
name up in each supported release's list.

What is followed:

- module aliases: ``import tensorrt as trt``, ``from cuda.bindings import runtime as cudart``,
  ``from cuda import cudart``, ``import cuda.bindings.runtime``, ``importlib.import_module("...")``,
  ``from tensorrt import Builder``, ``getattr(trt, "X")``, module chains (``trt.BuilderFlag.FP16``);
- objects obtained from it, through the classes the name lists record as returned: ``trt.Builder(logger)``
  is a ``Builder``, ``builder.create_network(...)`` an ``INetworkDefinition``, ``network.get_input(0).name``
  is ``ITensor.name``; through local variables, ``self.`` attributes set in any method of the class,
  ``with ... as``, parameters annotated ``trt.X``, and functions of the same file that return a tracked module
  (``_cudart()``) or hand back one of their arguments (``_checked(trt.Builder(logger), ...)``).
  Branches (if/else, try/except, loops) are merged optimistically: a name bound to a tracked object on any
  path keeps it, so ``except ImportError: trt = None`` does not hide the uses after it.

What is not: objects that come out of containers, tuples or unannotated parameters (``for t in tensors``,
``err, props = cudart.cudaGetDeviceProperties(0)`` then ``props.major``), objects passed between files,
methods whose pybind11 signature names no class, members reached through a subclass of a TensorRT
class (the base class name itself is checked), and names tested with ``hasattr`` (deliberately: probing for
a name is how code supports releases with and without it). Dunder attributes other than ``__version__`` are
ignored. The lists say a name exists, not that its arguments match.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Import paths that mean one of the checked modules, and the name the checks use for it.
TRACKED_MODULES: dict[str, str] = {
    "tensorrt": "tensorrt",
    "tensorrt_bindings": "tensorrt",
    "cuda.bindings.runtime": "cudart",
    "cuda.cudart": "cudart",  # cuda-python < 12.6
}
#: ``{name: (kind, returned class or None)}``: one release's bound names (``surface.load_names``).
Names = Mapping[str, tuple[str, str | None]]


@dataclass(frozen=True)
class Use:
    """One attribute of a checked module used at ``path:line`` (``name``: dotted, relative to the module)."""

    module: str
    name: str
    path: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class _Ref:
    """What an expression is known to be: a checked module, one of its classes or members, or an instance."""

    kind: str  # "module", "class", "callable", "instance", "member" (cudart chain), "path" (package), "self"
    module: str
    name: str = ""


@dataclass(frozen=True)
class _LocalFunction:
    node: ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class _Summary:
    returns: _Ref | None = None
    passthrough: str | None = None  # the parameter every return statement hands back


_Bound = _Ref | _LocalFunction
Env = dict[str, _Bound]


@dataclass
class _Analyzer:
    """Walks one file's AST: two passes learn function summaries and ``self.`` attributes, a third records."""

    path: str
    index: Names
    uses: list[Use] = field(default_factory=list)
    recording: bool = False
    summaries: dict[int, _Summary] = field(default_factory=dict)
    class_attrs: dict[str, dict[str, _Bound]] = field(default_factory=dict)
    _returns: list[list[tuple[ast.expr | None, _Ref | None]]] = field(default_factory=list)

    def run(self, tree: ast.Module) -> list[Use]:
        for recording in (False, False, True):
            self.recording = recording
            self.block(tree.body, {}, None)
        return sorted(set(self.uses), key=lambda u: (u.path, u.line, u.name))

    # ------------------------------------------------------------------------------------------- recording
    def record(self, module: str, name: str, node: ast.AST) -> None:
        if self.recording:
            self.uses.append(Use(module, name, self.path, getattr(node, "lineno", 0)))

    def member(self, base: _Ref, attr: str, node: ast.AST) -> _Bound | None:
        """``base.attr``: records the use and returns what it is, where the name lists say."""
        if base.kind == "self":
            return self.class_attrs.get(base.name, {}).get(attr)
        if base.kind == "path":
            path = f"{base.module}.{attr}"
            tracked = TRACKED_MODULES.get(path)
            return _Ref("module", tracked) if tracked else _Ref("path", path)
        if attr.startswith("__") and attr != "__version__":
            return None
        if base.kind in ("module", "member") and base.module != "tensorrt":
            name = f"{base.name}.{attr}" if base.name else attr
            self.record(base.module, name, node)
            return _Ref("member", base.module, name)
        if base.kind == "callable":
            return None
        name = f"{base.name}.{attr}" if base.name else attr
        self.record(base.module, name, node)
        kind, returned = self.index.get(name, ("", None))
        if kind == "class":
            return _Ref("class", base.module, name)
        if kind in ("method", "function"):
            return _Ref("callable", base.module, returned or "")
        if kind in ("property", "value") and returned:
            return _Ref("instance", base.module, returned)
        return None

    # ---------------------------------------------------------------------------------------- expressions
    def expr(self, node: ast.AST | None, env: Env) -> _Bound | None:
        if node is None:
            return None
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.expr(node.value, env)
            return self.member(base, node.attr, node) if isinstance(base, _Ref) else None
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if isinstance(node, ast.IfExp):
            self.expr(node.test, env)
            first, second = self.expr(node.body, env), self.expr(node.orelse, env)
            return first if second is None or first == second else (second if first is None else None)
        if isinstance(node, ast.NamedExpr):
            value = self.expr(node.value, env)
            self.bind(node.target, value, env, None)
            return value
        if isinstance(node, ast.Lambda):
            inner = dict(env)
            for arg in node.args.args + node.args.kwonlyargs:
                inner.pop(arg.arg, None)
            self.expr(node.body, inner)
            return None
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            inner = dict(env)
            for generator in node.generators:
                self.expr(generator.iter, inner)
                self.bind(generator.target, None, inner, None)
                for condition in generator.ifs:
                    self.expr(condition, inner)
            if isinstance(node, ast.DictComp):
                self.expr(node.key, inner)
                self.expr(node.value, inner)
            else:
                self.expr(node.elt, inner)
            return None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.keyword):
                self.expr(child.value, env)
            elif isinstance(child, ast.expr):
                self.expr(child, env)
        return None

    def call(self, node: ast.Call, env: Env) -> _Bound | None:
        func = node.func
        constant = (
            node.args[0].value
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            else None
        )
        is_import = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
            isinstance(func, ast.Name) and func.id == "import_module"
        )
        if is_import and constant is not None:
            tracked = TRACKED_MODULES.get(constant)
            return _Ref("module", tracked) if tracked else _Ref("path", constant)
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2:
            base = self.expr(node.args[0], env)
            name = node.args[1]
            for extra in node.args[2:]:
                self.expr(extra, env)
            if func.id == "hasattr" or not isinstance(base, _Ref):
                return None
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                return self.member(base, name.value, node)
            return None
        target = self.expr(func, env)
        args = [self.expr(arg, env) for arg in node.args]
        keywords = {kw.arg: self.expr(kw.value, env) for kw in node.keywords}
        if isinstance(target, _LocalFunction):
            summary = self.summaries.get(id(target.node))
            if summary is None:
                return None
            if summary.passthrough is not None:
                params = [a.arg for a in target.node.args.posonlyargs + target.node.args.args]
                if summary.passthrough in keywords:
                    found = keywords[summary.passthrough]
                    return found if isinstance(found, _Ref) else None
                position = params.index(summary.passthrough)
                if params and params[0] in ("self", "cls"):
                    position -= 1
                found = args[position] if 0 <= position < len(args) else None
                return found if isinstance(found, _Ref) else None
            return summary.returns
        if isinstance(target, _Ref):
            if target.kind == "class":
                return _Ref("instance", target.module, target.name)
            if target.kind == "callable" and target.name:
                return _Ref("instance", target.module, target.name)
        return None

    # ----------------------------------------------------------------------------------------- statements
    def bind(self, target: ast.expr, value: _Bound | None, env: Env, cls: str | None) -> None:
        if isinstance(target, ast.Name):
            if value is None:
                env.pop(target.id, None)
            else:
                env[target.id] = value
        elif isinstance(target, ast.Attribute):
            owner = self.expr(target.value, env)
            if isinstance(owner, _Ref) and owner.kind == "self":
                if value is not None:
                    self.class_attrs.setdefault(owner.name, {})[target.attr] = value
            elif isinstance(owner, _Ref):
                self.member(owner, target.attr, target)  # assigning a property is a use of it
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self.bind(element, None, env, cls)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, None, env, cls)
        else:
            self.expr(target, env)

    def imports(self, node: ast.Import | ast.ImportFrom, env: Env) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                tracked = TRACKED_MODULES.get(alias.name)
                if alias.asname:
                    env[alias.asname] = _Ref("module", tracked) if tracked else _Ref("path", alias.name)
                else:
                    top = alias.name.split(".")[0]
                    top_tracked = TRACKED_MODULES.get(top)
                    env[top] = _Ref("module", top_tracked) if top_tracked else _Ref("path", top)
            return
        if node.level or node.module is None:
            return
        for alias in node.names:
            local = alias.asname or alias.name
            path = f"{node.module}.{alias.name}"
            if path in TRACKED_MODULES:
                env[local] = _Ref("module", TRACKED_MODULES[path])
            elif node.module in TRACKED_MODULES:
                found = self.member(_Ref("module", TRACKED_MODULES[node.module]), alias.name, node)
                if found is None:
                    env.pop(local, None)
                else:
                    env[local] = found
            elif any(key.startswith(path + ".") for key in TRACKED_MODULES):
                env[local] = _Ref("path", path)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, env: Env, cls: str | None) -> None:
        inner = dict(env)
        params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        for position, arg in enumerate(params):
            inner.pop(arg.arg, None)
            annotated = self.expr(arg.annotation, env)
            if isinstance(annotated, _Ref) and annotated.kind == "class":
                inner[arg.arg] = _Ref("instance", annotated.module, annotated.name)
            elif cls is not None and position == 0 and arg.arg in ("self", "cls"):
                inner[arg.arg] = _Ref("self", "", cls)
        for extra in (node.args.vararg, node.args.kwarg):
            if extra is not None:
                inner.pop(extra.arg, None)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.expr(default, env)
        for decorator in node.decorator_list:
            self.expr(decorator, env)
        annotated_return = self.expr(node.returns, env)
        self._returns.append([])
        self.block(node.body, inner, cls)
        returns = self._returns.pop()
        summary = _Summary()
        names = {value.id for value, _ in returns if isinstance(value, ast.Name)}
        param_names = {a.arg for a in params}
        if returns and len(names) == 1 and all(isinstance(v, ast.Name) for v, _ in returns):
            (name,) = names
            if name in param_names:
                summary.passthrough = name
        refs = {ref for _, ref in returns if ref is not None}
        if summary.passthrough is None and len(refs) == 1:
            summary.returns = refs.pop()
        elif isinstance(annotated_return, _Ref) and annotated_return.kind == "class":
            summary.returns = _Ref("instance", annotated_return.module, annotated_return.name)
        self.summaries[id(node)] = summary

    def block(self, body: Iterable[ast.stmt], env: Env, cls: str | None) -> None:
        for statement in body:
            self.statement(statement, env, cls)

    def branches(self, blocks: Sequence[Sequence[ast.stmt]], env: Env, cls: str | None) -> None:
        """Alternative paths (if/else, try/except, a loop that may not run), each from a copy of ``env``.

        Afterwards a name keeps what the first path that binds it bound (the ``try`` body, the ``if`` body):
        ``except ImportError: trt = None`` does not hide the ``trt.X`` uses after it.
        """
        results = []
        for body in blocks:
            branch = dict(env)
            self.block(body, branch, cls)
            results.append(branch)
        env.clear()
        for branch in reversed(results):
            env.update(branch)

    def statement(self, node: ast.stmt, env: Env, cls: str | None) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            self.imports(node, env)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            env[node.name] = _LocalFunction(node)
            self.function(node, env, cls)
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.expr(base, env)
            methods = self.class_attrs.setdefault(node.name, {})
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    methods.setdefault(item.name, _LocalFunction(item))
            self.block(node.body, dict(env), node.name)
            env.pop(node.name, None)
        elif isinstance(node, ast.Assign):
            value = self.expr(node.value, env)
            for target in node.targets:
                self.bind(target, value, env, cls)
        elif isinstance(node, ast.AnnAssign):
            value = self.expr(node.value, env)
            annotated = self.expr(node.annotation, env)
            if value is None and isinstance(annotated, _Ref) and annotated.kind == "class":
                value = _Ref("instance", annotated.module, annotated.name)
            self.bind(node.target, value, env, cls)
        elif isinstance(node, ast.AugAssign):
            self.expr(node.value, env)
            self.expr(node.target, env)
        elif isinstance(node, ast.Return):
            ref = self.expr(node.value, env)
            if self._returns:
                self._returns[-1].append((node.value, ref if isinstance(ref, _Ref) else None))
        elif isinstance(node, ast.For | ast.AsyncFor):
            self.expr(node.iter, env)
            self.bind(node.target, None, env, cls)
            self.branches([[*node.body, *node.orelse], []], env, cls)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for context in node.items:
                value = self.expr(context.context_expr, env)
                if context.optional_vars is not None:
                    self.bind(context.optional_vars, value, env, cls)
            self.block(node.body, env, cls)
        elif isinstance(node, ast.Try | ast.TryStar):
            for handler in node.handlers:
                self.expr(handler.type, env)
            handlers = [
                [ast.Delete(targets=[ast.Name(h.name)]), *h.body] if h.name else h.body for h in node.handlers
            ]
            self.branches([[*node.body, *node.orelse], *handlers], env, cls)
            self.block(node.finalbody, env, cls)
        elif isinstance(node, ast.If):
            self.expr(node.test, env)
            self.branches([node.body, node.orelse], env, cls)
        elif isinstance(node, ast.While):
            self.expr(node.test, env)
            self.branches([[*node.body, *node.orelse], []], env, cls)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                self.bind(target, None, env, cls)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.statement(child, env, cls)
                elif isinstance(child, ast.expr):
                    self.expr(child, env)


def collect_source(source: str, path: str, index: Names) -> list[Use]:
    """Every checked-module attribute used in ``source`` (a file's text; ``path`` names it in reports)."""
    return _Analyzer(path, index).run(ast.parse(source, filename=path))
