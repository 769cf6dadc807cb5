using System.Text.Json;
using System.Text.RegularExpressions;
using Bursar.Core.Budgets;
using Bursar.Core.Limits;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// A request to the admin, reports or routes API that cannot be bound (a query parameter of the wrong type, a body
/// field with a value its type does not have) is answered with RFC 9457 problem details naming the field and what it
/// accepts, instead of ASP.NET Core's empty 400.
/// </summary>
public static partial class AdminBadRequest
{
    private static readonly Dictionary<string, string> Allowed = new(StringComparer.OrdinalIgnoreCase)
    {
        ["period"] = string.Join(", ", Enum.GetNames<BudgetPeriod>().Select(n => n.ToLowerInvariant())),
        ["scope"] = $"{string.Join(", ", Enum.GetNames<BudgetScope>().Select(n => n.ToLowerInvariant()))} (rate limits: {string.Join(", ", Enum.GetNames<RateLimitScope>().Select(n => n.ToLowerInvariant()))})",
    };

    public static WebApplication UseAdminBadRequestProblems(this WebApplication app)
    {
        app.Use(async (ctx, next) =>
        {
            try
            {
                await next(ctx).ConfigureAwait(false);
            }
            catch (BadHttpRequestException e) when (!ctx.Response.HasStarted && IsAdminPath(ctx.Request.Path))
            {
                var (field, detail) = Describe(e);
                ctx.Response.Clear();
                await Results.Problem(statusCode: 400, title: "Bad request", detail: detail,
                    extensions: field is null ? null : new Dictionary<string, object?> { ["field"] = field }).ExecuteAsync(ctx).ConfigureAwait(false);
            }
        });
        return app;
    }

    /// <summary>
    /// An optional integer query parameter, bound here rather than by the framework: the source-generated request delegates
    /// answer a malformed optional number with an empty 400 instead of throwing, so this throws what the framework's binder
    /// throws and the middleware above names the parameter in problem details.
    /// </summary>
    public static int? OptionalInt(string? raw, string name) =>
        string.IsNullOrEmpty(raw) ? null
        : int.TryParse(raw, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var v) ? v
        : throw new BadHttpRequestException($"Failed to bind parameter \"int? {name}\" from \"{raw}\".");

    private static bool IsAdminPath(PathString path) =>
        path.StartsWithSegments("/admin") || path.StartsWithSegments("/dashboard/api");

    internal static (string? Field, string Detail) Describe(BadHttpRequestException e)
    {
        if (e.InnerException is JsonException { Path: { } path } json)
        {
            var field = path.TrimStart('$').TrimStart('.');
            if (field.Length == 0) return (null, $"The request body is not a valid JSON object: {FirstSentence(json.Message)}");
            return (field, Allowed.TryGetValue(field, out var values)
                ? $"The field '{field}' has a value it does not accept; it takes one of: {values}."
                : $"The field '{field}' has a value of the wrong type or format.");
        }
        if (e.InnerException is JsonException other) return (null, $"The request body is not valid JSON: {FirstSentence(other.Message)}");
        var m = BindFailure().Match(e.Message);
        if (m.Success)
        {
            var (type, name, value) = (m.Groups["type"].Value.Replace("Nullable<", "", StringComparison.Ordinal).TrimEnd('>', '?'), m.Groups["name"].Value, m.Groups["value"].Value);
            var kind = type switch { "int" or "long" => "an integer", "decimal" or "double" => "a number", "bool" => "true or false", "DateTimeOffset" => "an ISO 8601 time", _ => "a " + type };
            return (name, $"The query parameter '{name}' must be {kind}, not '{value}'.");
        }
        if (e.Message.Contains("request body", StringComparison.OrdinalIgnoreCase))
            return (null, "The request needs a JSON body (Content-Type: application/json).");
        return (null, e.Message);
    }

    private static string FirstSentence(string s)
    {
        var i = s.IndexOf(" Path:", StringComparison.Ordinal);
        return i > 0 ? s[..i] : s;
    }

    [GeneratedRegex("""Failed to bind parameter "(?<type>[\w?<>]+) (?<name>\w+)" from "(?<value>.*)"\.""")]
    private static partial Regex BindFailure();
}
