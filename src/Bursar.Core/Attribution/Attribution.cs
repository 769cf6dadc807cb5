using Bursar.Core.Keys;

namespace Bursar.Core.Attribution;

/// <summary>Who a call is for and what it is for: from the virtual key, then from <c>x-bursar-*</c> headers the key's policy allows.</summary>
public sealed record CallAttribution
{
    public string? KeyId { get; init; }
    public string? Team { get; init; }
    public string? Customer { get; init; }
    public string? Feature { get; init; }
    public string? Task { get; init; }
    public string? Template { get; init; }
    public string? RunId { get; init; }

    public static CallAttribution None { get; } = new();
}

/// <summary>
/// A tag header the key may not set (answered with a permission error that names the header), or one whose value is
/// malformed (<paramref name="Malformed"/>: control characters, too long; answered with a 400 that names the header).
/// </summary>
public sealed record AttributionError(string Header, string Message, bool Malformed = false);

public static class AttributionResolver
{
    public const string FeatureHeader = "x-bursar-feature";
    public const string TeamHeader = "x-bursar-team";
    public const string CustomerHeader = "x-bursar-customer";
    public const string TaskHeader = "x-bursar-task";
    public const string TemplateHeader = "x-bursar-template";
    public const string RunHeader = "x-bursar-run";

    public static readonly string[] AllTags = ["team", "customer", "feature", "task", "template", "run"];

    /// <summary>Longest tag value accepted; longer values are refused rather than stored.</summary>
    public const int MaxTagLength = 128;

    /// <summary>In <see cref="VirtualKey.AllowedCustomers"/>: the key may name any customer.</summary>
    public const string AnyCustomer = "*";

    /// <summary>
    /// Default policy: a caller may set feature, task, template and run, and team when the key does not fix it.
    /// A key with <see cref="VirtualKey.AllowedTagHeaders"/> allows exactly those (a tag the key fixes is still never overridden).
    /// The customer is different: it selects whose budgets a call spends, so a key may name one only when its
    /// <see cref="VirtualKey.AllowedCustomers"/> lists customers (and then only those, or any with <c>*</c>).
    /// </summary>
    public static bool MaySet(VirtualKey key, string tag)
    {
        if (tag == "team" && key.Team is not null) return false;
        if (tag == "customer") return key.Customer is null && key.AllowedCustomers is { Count: > 0 };
        if (tag == "feature" && key.Feature is not null) return false;
        if (key.AllowedTagHeaders is { } allowed) return allowed.Contains(tag, StringComparer.OrdinalIgnoreCase);
        return true;
    }

    /// <summary>Whether the key may name <paramref name="customer"/> (exact, case-sensitive, as budgets match it).</summary>
    public static bool MayName(VirtualKey key, string customer) =>
        key.Customer is null && key.AllowedCustomers is { } allowed && (allowed.Contains(AnyCustomer, StringComparer.Ordinal) || allowed.Contains(customer, StringComparer.Ordinal));

    /// <summary>True for C0 controls (U+0000-U+001F, tab included), DEL (U+007F) and C1 controls (U+0080-U+009F).</summary>
    public static bool IsControl(char c) => c < 0x20 || c is >= '\u007f' and <= '\u009f';

    /// <summary>The index of the first control character (see <see cref="IsControl"/>) in <paramref name="value"/>, or -1.</summary>
    public static int IndexOfControl(ReadOnlySpan<char> value)
    {
        for (var i = 0; i < value.Length; i++) if (IsControl(value[i])) return i;
        return -1;
    }

    public static CallAttribution Resolve(VirtualKey key, Func<string, string?> header, out AttributionError? error) => Resolve(key, header, null, out error);

    /// <summary>
    /// As <see cref="Resolve(VirtualKey, Func{string, string?}, out AttributionError?)"/>; returns <paramref name="same"/>
    /// itself when it names exactly the attribution this call resolves to (a service sends the same tags on every call,
    /// and an attribution never changes once made).
    /// </summary>
    public static CallAttribution Resolve(VirtualKey key, Func<string, string?> header, CallAttribution? same, out AttributionError? error)
    {
        error = null;
        var team = Tag(key, header, "team", TeamHeader, key.Team, ref error);
        var customer = Tag(key, header, "customer", CustomerHeader, key.Customer, ref error);
        var feature = Tag(key, header, "feature", FeatureHeader, key.Feature, ref error);
        var task = Tag(key, header, "task", TaskHeader, null, ref error);
        var template = Tag(key, header, "template", TemplateHeader, null, ref error);
        var run = Tag(key, header, "run", RunHeader, null, ref error);
        if (same is not null && same.KeyId == key.Id && same.Team == team && same.Customer == customer && same.Feature == feature
            && same.Task == task && same.Template == template && same.RunId == run)
            return same;
        return new CallAttribution { KeyId = key.Id, Team = team, Customer = customer, Feature = feature, Task = task, Template = template, RunId = run };
    }

    private static string? Tag(VirtualKey key, Func<string, string?> header, string tag, string headerName, string? fixedValue, ref AttributionError? err)
    {
        var v = header(headerName);
        if (string.IsNullOrEmpty(v)) return fixedValue;
        if (v.Length > MaxTagLength)
        {
            err ??= new AttributionError(headerName, $"Header {headerName} is {v.Length} characters long; the limit is {MaxTagLength}.", Malformed: true);
            return fixedValue;
        }
        if (IndexOfControl(v) is var at and >= 0)
        {
            // tags are stored and later printed (reports, CSV, the dashboard): an escape sequence must not get that far
            err ??= new AttributionError(headerName, $"Header {headerName} contains a control character (U+{(int)v[at]:X4} at position {at}); tag values must be printable text.", Malformed: true);
            return fixedValue;
        }
        if (!MaySet(key, tag))
        {
            err ??= new AttributionError(headerName, NotAllowed(key, tag, headerName, fixedValue));
            return fixedValue;
        }
        if (tag == "customer" && !MayName(key, v))
        {
            err ??= new AttributionError(headerName,
                $"Key {key.Prefix}… may not name customer '{v}' in {headerName}; it may name: {string.Join(", ", key.AllowedCustomers!)}. Use one of those, or create a key that allows it (--customers / \"allowed_customers\").");
            return fixedValue;
        }
        return v;
    }

    private static string NotAllowed(VirtualKey key, string tag, string headerName, string? fixedValue) => fixedValue is not null
        ? $"Key {key.Prefix}… fixes {tag} to '{fixedValue}'; remove the {headerName} header."
        : tag == "customer"
            ? $"Key {key.Prefix}… may not name a customer: remove the {headerName} header, or allow the customers it may name (bursar keys create --customers acme,globex, or \"allowed_customers\" in the admin API's key body; \"*\" allows any)."
            : $"Key {key.Prefix}… may not set {headerName}; its policy allows: {string.Join(", ", AllTags.Where(t => MaySet(key, t)))}.";
}
