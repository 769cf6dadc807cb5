using System.Text;
using AngleSharp.Dom;
using AngleSharp.Html.Parser;

namespace Bursar.Core.Context;

/// <summary>
/// Makes one document cheaper to send without losing what a reader would keep: HTML becomes text through a real HTML
/// parser (AngleSharp; scripts, styles, navigation, hidden nodes and page chrome dropped; headings, paragraphs, lists and
/// tables kept as text), whitespace is collapsed outside fenced code (kept verbatim), and long base64 blobs become a stub.
/// Lines repeated as headers or footers across the documents of one request are removed by <see cref="RemoveRepeatedEdges"/>.
/// Thread-safe: it holds no state beyond its options.
/// </summary>
public sealed class DocumentCompressor(DocumentCompressionOptions options)
{
    /// <summary>Elements whose content is never text a reader sees.</summary>
    private static readonly HashSet<string> Dropped = new(StringComparer.Ordinal)
    {
        "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed", "button", "select", "input", "textarea",
        "option", "link", "meta", "head", "nav", "audio", "video", "source", "track", "map", "dialog",
    };

    /// <summary>Page chrome: dropped unless it holds the page's article.</summary>
    private static readonly HashSet<string> Chrome = new(StringComparer.Ordinal) { "header", "footer", "aside", "form", "menu" };

    private static readonly HashSet<string> ChromeRoles = new(StringComparer.OrdinalIgnoreCase) { "navigation", "banner", "contentinfo", "complementary", "menu", "menubar", "search", "dialog" };

    /// <summary>Class or id words that mark chrome (whole words of the attribute, split at spaces, dashes and underscores).</summary>
    private static readonly HashSet<string> ChromeWords = new(StringComparer.OrdinalIgnoreCase)
    {
        "nav", "navbar", "navigation", "menu", "sidebar", "footer", "breadcrumb", "breadcrumbs", "share", "sharing", "social", "cookie", "cookies",
        "newsletter", "subscribe", "popup", "modal", "advert", "advertisement", "ads", "promo", "masthead", "skip", "comments", "related",
    };

    private static readonly HashSet<string> Blocks = new(StringComparer.Ordinal)
    {
        "p", "div", "section", "article", "main", "body", "blockquote", "figure", "figcaption", "dl", "dt", "dd", "address", "details", "summary",
        "center", "hr", "header", "footer", "aside", "form", "fieldset", "caption", "tbody", "thead", "tfoot",
    };

    public DocumentCompressionOptions Options { get; } = options;

    /// <summary>Elements nested deeper than this are read as plain text (no recursion deeper, whatever the page).</summary>
    public const int MaxDepth = 200;

    /// <summary>Chrome-looking wrappers are checked for holding the page's text only this near the top (each check reads the element's text).</summary>
    private const int TextCheckDepth = 32;

    /// <summary>Whether <paramref name="text"/> reads as HTML: a doctype, an html or body tag, or markup with several closing tags near its start.</summary>
    public static bool LooksLikeHtml(string text)
    {
        var span = text.AsSpan().TrimStart();
        if (span.Length == 0 || span[0] != '<') return false;
        var head = span[..Math.Min(span.Length, 4096)];
        if (head.Contains("<!doctype html", StringComparison.OrdinalIgnoreCase) || head.Contains("<html", StringComparison.OrdinalIgnoreCase)
            || head.Contains("<body", StringComparison.OrdinalIgnoreCase)) return true;
        var closing = 0;
        for (var i = head.IndexOf("</", StringComparison.Ordinal); i >= 0 && closing < 3; closing++)
        {
            var next = head[(i + 2)..].IndexOf("</", StringComparison.Ordinal);
            i = next < 0 ? -1 : i + 2 + next;
        }
        return closing >= 3;
    }

    /// <summary>Where an HTML page starts inside a text (a doctype, an html or a body tag after the caller's own words), or -1.</summary>
    public static int HtmlStart(string text)
    {
        var start = -1;
        foreach (var marker in (ReadOnlySpan<string>)["<!doctype html", "<html", "<body"])
        {
            var i = text.IndexOf(marker, StringComparison.OrdinalIgnoreCase);
            if (i >= 0 && (start < 0 || i < start)) start = i;
        }
        return start;
    }

    /// <summary>
    /// Markup nested deeper than this (estimated by <see cref="EstimatedDepth"/>) is not parsed: an HTML5 tree builder's work grows with the
    /// square of the nesting, so such a document keeps its text as it is (whitespace collapsed, base64 stubbed). Real pages nest under 100.
    /// </summary>
    public const int MaxParseDepth = 2_000;

    /// <summary>The compressed document (the text itself when there is nothing to gain); words before an embedded page are kept as they are.</summary>
    public string Compress(string text, CancellationToken cancellationToken = default)
    {
        if (text.Length < Options.MinChars) return text;
        string plain;
        if (LooksLikeHtml(text)) plain = EstimatedDepth(text) <= MaxParseDepth ? HtmlToText(text, cancellationToken) : text;
        else if (HtmlStart(text) is var start and > 0 && EstimatedDepth(text) <= MaxParseDepth) plain = string.Concat(text.AsSpan(0, start), "\n", HtmlToText(text[start..], cancellationToken));
        else plain = text;
        return CollapseWhitespace(plain, Options.Base64MinChars);
    }

    private static readonly HashSet<string> VoidElements = new(StringComparer.OrdinalIgnoreCase)
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr", "p", "li", "td", "tr", "th", "option",
    };

    /// <summary>
    /// An upper estimate of how deep <paramref name="html"/>'s elements nest, in one pass over its tags (start tags open, end tags close;
    /// void elements and the ones whose end tag is optional do not count).
    /// </summary>
    public static int EstimatedDepth(string html)
    {
        int depth = 0, max = 0;
        for (var i = 0; i < html.Length - 1; i++)
        {
            if (html[i] != '<') continue;
            var c = html[i + 1];
            if (c == '/') { if (depth > 0) depth--; continue; }
            if (!char.IsAsciiLetter(c)) continue;
            var end = i + 1;
            while (end < html.Length && char.IsAsciiLetterOrDigit(html[end])) end++;
            if (VoidElements.Contains(html[(i + 1)..end])) continue;
            var close = html.IndexOf('>', end, Math.Min(1_000, html.Length - end)); // bounded: a tag that never closes costs no more
            if (close > 0 && html[close - 1] == '/') continue;
            if (++depth > max) max = depth;
        }
        return max;
    }

    /// <summary>The readable text of an HTML page, in Markdown-like form: headings, paragraphs, list items, table rows, fenced preformatted text.</summary>
    public static string HtmlToText(string html, CancellationToken cancellationToken = default)
    {
        var parser = new HtmlParser(new HtmlParserOptions { IsScripting = false });
        using var doc = parser.ParseDocument(html);
        var root = (INode?)doc.Body ?? doc.DocumentElement;
        var w = new TextWriterState { PageTextLength = root?.TextContent.Length ?? 0 };
        if (root is not null) Walk(root, w, false, 0, cancellationToken);
        return w.ToString();
    }

    private static void Walk(INode node, TextWriterState w, bool inArticle, int depth, CancellationToken ct)
    {
        foreach (var child in node.ChildNodes)
        {
            switch (child)
            {
                case IText t:
                    w.Inline(t.Data);
                    break;
                case IElement e when depth >= MaxDepth:
                    PlainText(e, w, ct);
                    break;
                case IElement e:
                    Element(e, w, inArticle, depth + 1, ct);
                    break;
            }
        }
    }

    /// <summary>The text under <paramref name="root"/> without recursion (scripts, styles and hidden nodes still dropped): for pages nested past <see cref="MaxDepth"/>.</summary>
    private static void PlainText(IElement root, TextWriterState w, CancellationToken ct)
    {
        var stack = new Stack<INode>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            var node = stack.Pop();
            if ((++w.Elements & 1023) == 0) ct.ThrowIfCancellationRequested();
            if (node is IText t) { w.Inline(t.Data); continue; }
            if (node is IElement e && (Dropped.Contains(e.LocalName) || IsHidden(e))) continue;
            for (var i = node.ChildNodes.Length - 1; i >= 0; i--) stack.Push(node.ChildNodes[i]);
        }
    }

    private static void Element(IElement e, TextWriterState w, bool inArticle, int depth, CancellationToken ct)
    {
        if ((++w.Elements & 1023) == 0) ct.ThrowIfCancellationRequested();
        var name = e.LocalName;
        if (Dropped.Contains(name) || IsHidden(e)) return;
        var holdsArticle = name is "article" or "main" || inArticle;
        if (!holdsArticle && IsChrome(e, name))
        {
            // near the top a chrome-looking wrapper is checked (does it hold the article, or most of the page's text?); deeper down the
            // checks would cost a pass over the subtree each, so a chrome-looking element is dropped unless a chrome-looking wrapper nearer the top was kept for holding the page
            if (depth <= TextCheckDepth)
            {
                if (!ContainsArticle(e) && !HoldsMostText(e, w)) return;
                w.TrustedDepth = Math.Min(w.TrustedDepth, depth); // this page's theme names its wrappers so: trust the deeper ones too
            }
            else if (w.TrustedDepth > depth) return;
        }
        switch (name)
        {
            case "br":
                w.LineBreak();
                return;
            case "pre":
                w.Fence(e.TextContent);
                return;
            case "h1" or "h2" or "h3" or "h4" or "h5" or "h6":
                w.Block();
                w.Raw(new string('#', name[1] - '0') + " ");
                Walk(e, w, holdsArticle, depth, ct);
                w.Block();
                return;
            case "li":
                w.Line();
                w.Raw(e.ParentElement?.LocalName == "ol" ? (w.NextOrdinal(e) + ". ") : "- ");
                Walk(e, w, holdsArticle, depth, ct);
                w.Line();
                return;
            case "ul" or "ol":
                w.Block();
                Walk(e, w, holdsArticle, depth, ct);
                w.Block();
                return;
            case "table":
                w.Block();
                Walk(e, w, holdsArticle, depth, ct);
                w.Block();
                return;
            case "tr":
                w.Line();
                var first = true;
                foreach (var cell in e.Children)
                {
                    if (cell.LocalName is not ("td" or "th") || IsHidden(cell)) continue;
                    if (!first) w.Raw(" | ");
                    first = false;
                    Walk(cell, w, holdsArticle, depth, ct);
                }
                w.Line();
                return;
            case "td" or "th":
                Walk(e, w, holdsArticle, depth, ct); // a cell outside a row
                w.Inline(" ");
                return;
            case "img":
                return; // an image's alt text is not article text
        }
        var block = Blocks.Contains(name);
        if (block) w.Block();
        Walk(e, w, holdsArticle, depth, ct);
        if (block) w.Block();
    }

    private static bool IsHidden(IElement e)
    {
        if (e.HasAttribute("hidden")) return true;
        if (string.Equals(e.GetAttribute("aria-hidden"), "true", StringComparison.OrdinalIgnoreCase)) return true;
        var style = e.GetAttribute("style");
        if (style is null) return false;
        var compact = style.Replace(" ", "", StringComparison.Ordinal);
        return compact.Contains("display:none", StringComparison.OrdinalIgnoreCase) || compact.Contains("visibility:hidden", StringComparison.OrdinalIgnoreCase);
    }

    private static bool IsChrome(IElement e, string name)
    {
        if (Chrome.Contains(name)) return true;
        if (e.GetAttribute("role") is { } role && ChromeRoles.Contains(role)) return true;
        return HasChromeClass(e.GetAttribute("class")) || (e.GetAttribute("id") is { } id && ChromeWords.Contains(id));
    }

    /// <summary>A class word (<c>site-footer</c>, <c>c-nav-list</c>: each part at dashes and underscores) that names chrome.</summary>
    private static bool HasChromeClass(string? attribute)
    {
        if (string.IsNullOrEmpty(attribute)) return false;
        foreach (var word in attribute.Split([' ', '-', '_', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries))
            if (ChromeWords.Contains(word)) return true;
        return false;
    }

    /// <summary>A wrapper that looks like chrome but holds most of the page's text is the page (a theme's odd class names): kept.</summary>
    private static bool HoldsMostText(IElement e, TextWriterState w) => e.TextContent.Length * 2 > w.PageTextLength;

    private static bool ContainsArticle(IElement e) => e.QuerySelector("article, main, [role=main]") is not null;

    /// <summary>
    /// Collapses runs of spaces and tabs to one space, trims line ends, keeps at most one blank line, and stubs base64 runs of at least
    /// <paramref name="base64MinChars"/> characters; lines inside fenced code (``` or ~~~) are kept verbatim.
    /// </summary>
    public static string CollapseWhitespace(string text, int base64MinChars)
    {
        var sb = new StringBuilder(text.Length);
        var inFence = false;
        string? fence = null;
        var blank = 0;
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.EndsWith('\r') ? raw[..^1] : raw;
            var trimmed = line.TrimStart();
            if (inFence)
            {
                sb.Append(line).Append('\n');
                if (trimmed.StartsWith(fence!, StringComparison.Ordinal)) inFence = false;
                continue;
            }
            if (trimmed.StartsWith("```", StringComparison.Ordinal) || trimmed.StartsWith("~~~", StringComparison.Ordinal))
            {
                inFence = true;
                fence = trimmed[..3];
                blank = 0;
                sb.Append(line).Append('\n');
                continue;
            }
            var collapsed = CollapseLine(line);
            if (collapsed.Length == 0)
            {
                if (++blank == 1 && sb.Length > 0) sb.Append('\n');
                continue;
            }
            blank = 0;
            sb.Append(StubBase64(collapsed, base64MinChars)).Append('\n');
        }
        while (sb.Length > 0 && sb[^1] == '\n') sb.Length--;
        return sb.ToString();
    }

    private static string CollapseLine(string line)
    {
        var sb = new StringBuilder(line.Length);
        var space = false;
        foreach (var c in line)
        {
            if (c is ' ' or '\t' or '\u00a0' or '\f' or '\v')
            {
                space = sb.Length > 0;
                continue;
            }
            if (space) sb.Append(' ');
            space = false;
            sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>Replaces each run of at least <paramref name="minChars"/> base64 characters (standard or URL-safe alphabet, padding) with a stub saying how long it was.</summary>
    public static string StubBase64(string text, int minChars)
    {
        StringBuilder? sb = null;
        var start = -1;
        var last = 0;
        for (var i = 0; i <= text.Length; i++)
        {
            var b64 = i < text.Length && (char.IsAsciiLetterOrDigit(text[i]) || text[i] is '+' or '/' or '=' or '-' or '_');
            if (b64)
            {
                if (start < 0) start = i;
                continue;
            }
            if (start >= 0 && i - start >= minChars && IsBlob(text.AsSpan(start, i - start)))
            {
                sb ??= new StringBuilder(text.Length);
                sb.Append(text, last, start - last).Append("[base64 data: ").Append(i - start).Append(" characters removed]");
                last = i;
            }
            start = -1;
        }
        if (sb is null) return text;
        return sb.Append(text, last, text.Length - last).ToString();
    }

    /// <summary>A run that mixes letters and digits (a long word or a row of dashes is not a blob).</summary>
    private static bool IsBlob(ReadOnlySpan<char> run)
    {
        int digits = 0, upper = 0, lower = 0;
        foreach (var c in run)
        {
            if (char.IsAsciiDigit(c)) digits++;
            else if (char.IsAsciiLetterUpper(c)) upper++;
            else if (char.IsAsciiLetterLower(c)) lower++;
        }
        return digits > 0 && upper > 0 && lower > 0;
    }

    /// <summary>
    /// Removes lines that open or close two or more of <paramref name="documents"/> (a site's header, a signature, a legal footer) from
    /// every document after the first one carrying them. Returns the documents in the same order; unchanged ones are the same strings.
    /// </summary>
    public static IReadOnlyList<string> RemoveRepeatedEdges(IReadOnlyList<string> documents, int edgeLines)
    {
        if (documents.Count < 2 || edgeLines <= 0) return documents;
        var lines = documents.Select(d => d.Split('\n')).ToArray();
        var seenIn = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var doc in lines)
            foreach (var edge in Edges(doc, edgeLines).Select(i => doc[i].Trim()).Where(l => l.Length > 0).Distinct(StringComparer.Ordinal))
                seenIn[edge] = seenIn.GetValueOrDefault(edge) + 1;
        var repeated = seenIn.Where(kv => kv.Value >= 2).Select(kv => kv.Key).ToHashSet(StringComparer.Ordinal);
        if (repeated.Count == 0) return documents;
        var kept = new HashSet<string>(StringComparer.Ordinal);
        var result = new string[documents.Count];
        for (var d = 0; d < lines.Length; d++)
        {
            var doc = lines[d];
            var drop = new HashSet<int>();
            foreach (var i in Edges(doc, edgeLines))
            {
                var l = doc[i].Trim();
                if (repeated.Contains(l) && !kept.Add(l)) drop.Add(i);
            }
            // the first document carrying a repeated line keeps it; the others lose it
            foreach (var i in Edges(doc, edgeLines)) kept.Add(doc[i].Trim());
            result[d] = drop.Count == 0 ? documents[d] : string.Join('\n', doc.Where((_, i) => !drop.Contains(i)));
        }
        return result;
    }

    /// <summary>The indexes of the first and last <paramref name="n"/> non-blank lines.</summary>
    private static IEnumerable<int> Edges(string[] doc, int n)
    {
        var found = new SortedSet<int>();
        for (int i = 0, k = 0; i < doc.Length && k < n; i++) if (doc[i].Trim().Length > 0) { found.Add(i); k++; }
        for (int i = doc.Length - 1, k = 0; i >= 0 && k < n; i--) if (doc[i].Trim().Length > 0) { found.Add(i); k++; }
        return found;
    }

    /// <summary>Builds the text: inline runs with whitespace collapsed, block and line breaks, fenced preformatted text.</summary>
    private sealed class TextWriterState
    {
        private readonly StringBuilder _sb = new();
        private bool _space;
        public int Elements;
        public int PageTextLength;
        /// <summary>The depth of the shallowest chrome-looking wrapper kept because it held the page (int.MaxValue: none).</summary>
        public int TrustedDepth = int.MaxValue;
        private readonly Dictionary<IElement, int> _ordinals = [];

        public void Inline(string text)
        {
            foreach (var c in text)
            {
                if (char.IsWhiteSpace(c))
                {
                    _space = true;
                    continue;
                }
                if (_space && _sb.Length > 0 && _sb[^1] is not ('\n' or ' ')) _sb.Append(' ');
                _space = false;
                _sb.Append(c);
            }
        }

        public void Raw(string text)
        {
            if (_space && _sb.Length > 0 && _sb[^1] is not ('\n' or ' ')) _sb.Append(' ');
            _space = false;
            _sb.Append(text);
        }

        public void LineBreak()
        {
            _sb.Append('\n');
            _space = false;
        }

        public void Line()
        {
            if (_sb.Length > 0 && _sb[^1] != '\n') _sb.Append('\n');
            _space = false;
        }

        public void Block()
        {
            Line();
            if (_sb.Length > 1 && _sb[^2] != '\n') _sb.Append('\n');
        }

        public void Fence(string text)
        {
            Block();
            _sb.Append("```\n").Append(text.TrimEnd('\n', '\r')).Append("\n```");
            Block();
        }

        public int NextOrdinal(IElement li)
        {
            var list = li.ParentElement!;
            var n = _ordinals.GetValueOrDefault(list) + 1;
            _ordinals[list] = n;
            return n;
        }

        public override string ToString() => _sb.ToString().Trim('\n', ' ');
    }
}
