"""Small helpers shared by the command-line tools."""
from typing import Optional


def doc_summary(doc: Optional[str]) -> str:
    """The first paragraph of a tool's module docstring as one line: its
    ``--help`` description (the first *line* would end mid-sentence)."""
    if not doc:
        return ''
    paragraph = doc.strip().split('\n\n')[0]
    return ' '.join(line.strip() for line in paragraph.splitlines())
