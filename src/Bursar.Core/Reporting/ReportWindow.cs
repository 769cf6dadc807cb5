using System.Globalization;

namespace Bursar.Core.Reporting;

/// <summary>A report's window from what a user typed (the CLI's options, the reports API's query): one rule for both.</summary>
public static class ReportWindow
{
    /// <summary>
    /// <paramref name="from"/> / <paramref name="to"/> are ISO 8601 (<c>2026-11-01</c>, <c>2026-11-01T09:00Z</c>, UTC unless an offset is given);
    /// without <paramref name="from"/>, <paramref name="days"/> means the last N days, and without either, everything. <paramref name="to"/>
    /// defaults to the end of the current hour. The error names the field to fix.
    /// </summary>
    public static bool TryParse(string? from, string? to, int? days, DateTimeOffset now, out (DateTimeOffset From, DateTimeOffset To) window, out string? error)
    {
        window = default;
        error = null;
        DateTimeOffset end = now.AddHours(1), start = DateTimeOffset.UnixEpoch;
        if (to is not null && !DateTimeOffset.TryParse(to, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out end))
            error = $"to: '{to}' is not a date; use ISO 8601 such as 2026-11-01 or 2026-11-01T09:00Z";
        else if (from is not null && !DateTimeOffset.TryParse(from, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out start))
            error = $"from: '{from}' is not a date; use ISO 8601 such as 2026-11-01 or 2026-11-01T09:00Z";
        else if (from is null && days is { } d)
        {
            if (d <= 0) error = $"days: {d} must be at least 1";
            else start = now.AddDays(-d);
        }
        if (error is null && start >= end) error = $"from ({start:O}) must be before to ({end:O})";
        if (error is not null) return false;
        window = (start, end);
        return true;
    }
}
