using System.Globalization;
using System.Text;

namespace Bursar.Core.Reporting;

/// <summary>
/// Makes stored text safe to print: every control character (C0, DEL, C1; see
/// <see cref="Attribution.AttributionResolver.IsControl"/>) becomes a visible <c>\xNN</c> / <c>\uNNNN</c> escape. Tags are refused with control characters at the
/// gateway, but old ledger rows and imports may still hold them: every table and CSV printer goes through this.
/// </summary>
public static class TerminalText
{
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text) || Attribution.AttributionResolver.IndexOfControl(text) < 0) return text ?? "";
        var sb = new StringBuilder(text.Length + 16);
        foreach (var c in text)
        {
            if (!Attribution.AttributionResolver.IsControl(c)) sb.Append(c);
            else if (c <= 0xFF) sb.Append("\\x").Append(((int)c).ToString("X2", CultureInfo.InvariantCulture));
            else sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
