"""The Chinese help under each parameter of the job form, one entry per field of every
job type.

The English help is the field's own ``Field(description=...)`` in the job type's
``Spec`` (what the job-spec schema and the CLI say); this module holds its Chinese, keyed
by job type and field, and registers the pair as ``ui.help.<type>.<field>`` with
:func:`scifed.web.i18n.register`. A field added to a type without its Chinese here fails
``tests/unit/test_form_text.py``; the form shows the English description of a type the
console has no entry for (one a test or a newer coordinator registered), since that is
data about the type, not interface text the console ships.
"""

from __future__ import annotations

import jobs  # noqa: F401 - registers the built-in job types
from jobs import registry
from scifed.web import i18n

PREFIX = "ui.help."

ZH: dict[str, dict[str, str]] = {
    "stats": {
        "columns": "计算计数、总和、均值、方差和标准差的数值字段",
        "measures": "对 columns 发布其中哪些统计量",
        "histograms": "字段 -> 分箱边界",
        "quantiles": "字段 -> 概率",
        "group_counts": "按其取值组合计数的字段",
        "correlation": "两两计算相关系数的数值字段",
        "dp": "加噪结果：申请的 ε 及各字段的截断范围",
    },
    "quality": {
        "target": "标签字段；默认：记录中的第一个目标字段",
        "columns": "统计缺失值和各阶矩的字段；默认：全部字段",
    },
    "train": {
        "features": "模型的输入字段",
        "label": "一个字段，或基于字段的条件（派生的二元标签，例如 'body_mass_g > 4000'）",
        "task": "标签的类型：类别或数值",
        "classes": "标签取值，按输出顺序（仅分类）；整数和布尔值按其文本保留（'0'、'true'）",
        "model": "模型库中的模型：类型，以及 MLP 各隐藏层的宽度",
        "rounds": "联邦训练的轮数",
        "local_epochs": "每轮中各节点遍历其数据的次数",
        "batch_size": "每个梯度步的行数",
        "lr": "学习率",
        "validation_split": "各节点留出用于评估模型的数据比例",
        "seed": "初始权重和数据划分的随机种子",
        "dp": "DP-SGD：全部轮次的 ε、δ 和梯度截断范数",
        "standardize": "特征 -> （均值，标准差），例如取自 stats 作业",
        "min_nodes": "剩余节点少于此数时运行失败（默认：研究项目的最少节点数）",
        "min_node_classes": "持有的不同类别少于此数的节点拒绝参与",
        "round_timeout": "等待一轮回复的秒数",
    },
    "regression": {
        "formula": "类似 statsmodels 的公式，例如 'mpg ~ weight + C(origin)'",
        "y": "响应变量字段",
        "x": "预测变量：字段名或 C(字段)",
        "intercept": "拟合常数项",
        "family": "广义线性模型的误差分布（gaussian：普通最小二乘）",
        "max_iter": "广义线性模型：拟合的最大迭代次数",
        "tol": "结束拟合的偏差相对变化量",
        "confidence": "置信区间的置信水平",
        "offset": "广义线性模型：以系数 1 加入线性预测值的字段",
        "exposure": "对数连接的广义线性模型：取其对数作为偏移量的正值字段（按暴露量计的率）",
        "dp": "加噪的充分统计量（仅 gaussian）：申请的 ε 及响应变量和数值预测变量的截断范围",
    },
    "pca": {
        "columns": "数值字段，按载荷的顺序",
        "standardize": "是：使用相关矩阵（各字段缩放为单位方差）；否：使用协方差矩阵",
        "n_components": "发布的主成分个数（默认：全部）",
        "dp": "加噪的求和：申请的 ε 及各字段的截断范围",
    },
    "crosstab": {
        "rows": "作为表格行的分类字段",
        "columns": "作为表格列的分类字段",
        "layers": "可选的第三个字段：每个取值一张表",
        "dp": "加噪的单元格计数：申请的 ε（无需截断范围）",
    },
    "survival": {
        "time": "到事件发生或删失的时间（数值）",
        "event": "事件发生为 1，删失为 0；不填：每行都是一次事件",
        "groups": "分类字段：每个取值一条曲线，并在各组之间做对数秩检验",
        "bins": "时间轴的分箱边界，或在时间字段声明范围内等分的箱数（默认 20）",
        "confidence": "置信带的置信水平",
        "dp": "加噪的计数（仅 Kaplan–Meier 和对数秩检验）：申请的 ε",
        "cox": "Cox 比例风险模型的协变量：字段名，分类变量用 C(字段)",
        "max_iter": "Cox：牛顿迭代次数（每次为一轮加密计算）",
        "tol": "Cox：结束拟合的对数偏似然相对变化量",
    },
    "psi": {
        "on": "标识字段，或 节点 -> 其标识字段",
        "normalise": "哈希前依次对文本标识做的处理",
        "dp": "加噪的计数或求和：申请的 ε",
        "values": "在各节点都持有其标识的行上汇总某一节点的这些字段；不填：交集的大小",
    },
}


def key(job_type: str, name: str) -> str:
    return f"{PREFIX}{job_type}.{name}"


def _register() -> None:
    """Each Chinese help beside its field's English description; an entry naming a type
    or field that no longer exists is a stale entry, refused here."""
    messages = {}
    for job_type, fields in ZH.items():
        spec = registry.get(job_type).Spec.model_fields
        for name, zh in fields.items():
            if name not in spec:
                raise KeyError(f"Chinese help for {job_type}.{name}, which is no field")
            messages[key(job_type, name)] = (spec[name].description or "", zh)
    i18n.register(messages)


_register()


def help_text(t: i18n.Translator, job_type: str, name: str, english: str) -> str:
    """The help under a field in the page's language (``english``, its description,
    where this console has no entry for the field)."""
    k = key(job_type, name)
    return t(k) if k in i18n.catalog_keys() else english
