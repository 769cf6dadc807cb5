namespace Bursar.Core.Budgets;

/// <summary>Calendar windows of a budget period in a time zone: start of the current window and the next reset.</summary>
public static class BudgetWindow
{
    public static TimeZoneInfo Zone(string id)
    {
        try
        {
            return id is "UTC" or "Etc/UTC" ? TimeZoneInfo.Utc : TimeZoneInfo.FindSystemTimeZoneById(id);
        }
        catch (Exception e) when (e is TimeZoneNotFoundException or InvalidTimeZoneException)
        {
            throw new ArgumentException($"Unknown time zone '{id}'; use an IANA id such as 'Europe/Paris' or 'America/New_York'.", e);
        }
    }

    public static (DateTimeOffset Start, DateTimeOffset End) Current(BudgetPeriod period, string timeZone, DateTimeOffset now)
    {
        if (period == BudgetPeriod.Total) return (DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
        var tz = Zone(timeZone);
        var local = TimeZoneInfo.ConvertTime(now, tz).DateTime;
        DateTime start = period switch
        {
            BudgetPeriod.Hour => new DateTime(local.Year, local.Month, local.Day, local.Hour, 0, 0),
            BudgetPeriod.Day => local.Date,
            BudgetPeriod.Week => local.Date.AddDays(-(((int)local.DayOfWeek + 6) % 7)), // ISO weeks start on Monday
            BudgetPeriod.Month => new DateTime(local.Year, local.Month, 1),
            _ => throw new ArgumentOutOfRangeException(nameof(period)),
        };
        DateTime end = period switch
        {
            BudgetPeriod.Hour => start.AddHours(1),
            BudgetPeriod.Day => start.AddDays(1),
            BudgetPeriod.Week => start.AddDays(7),
            _ => start.AddMonths(1),
        };
        return (ToUtc(start, tz), ToUtc(end, tz));
    }

    private static DateTimeOffset ToUtc(DateTime local, TimeZoneInfo tz)
    {
        // a local midnight skipped by a DST jump starts at the first valid instant after it
        while (tz.IsInvalidTime(local)) local = local.AddMinutes(30);
        var offset = tz.IsAmbiguousTime(local) ? tz.GetAmbiguousTimeOffsets(local).Max() : tz.GetUtcOffset(local);
        return new DateTimeOffset(DateTime.SpecifyKind(local, DateTimeKind.Unspecified), offset).ToUniversalTime();
    }
}
