using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Core.Routing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Routing;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// <c>/admin/reports/...</c>: the same rollup-backed reports as <c>bursar report</c> and the dashboard, as JSON.
/// Windows: <c>from</c> / <c>to</c> (ISO 8601) or <c>days</c>; default everything up to now.
/// </summary>
public static class ReportsApi
{
    public static IEndpointRouteBuilder MapReportsApi(this IEndpointRouteBuilder app)
    {
        var reports = app.MapGroup("/admin/reports").AddEndpointFilter(AdminApi.RequireAdminKey).ProducesAdminProblems()
            .WithTags("reports").ProducesProblem(StatusCodes.Status400BadRequest);
        reports.MapGet("/spend", SpendAsync)
            .WithSummary("Spend, calls and tokens grouped by a dimension (by: feature, team, customer, model, ...; window: from / to in ISO 8601, or days)");
        reports.MapGet("/whatif", WhatIfAsync).WithSummary("The what-if ladder: the monthly cost after each lever, replayed over the last days (default 30)");
        return app;
    }

    private static async Task<Results<Ok<SpendReport>, ProblemHttpResult>> SpendAsync(string? by, string? from, string? to, string? days,
        IReportStore store, Bursar.Core.Pricing.PriceCatalog catalog, TimeProvider time, CancellationToken ct)
    {
        var dayCount = AdminBadRequest.OptionalInt(days, nameof(days));
        var dimension = ReportDimension.Feature;
        if (by is not null && !Enum.TryParse(by.Replace("_", "", StringComparison.Ordinal), ignoreCase: true, out dimension))
            return TypedResults.Problem(statusCode: 400, title: "Unknown report dimension",
                detail: $"by='{by}' is not a dimension; use one of: {string.Join(", ", Enum.GetNames<ReportDimension>().Select(n => n.ToLowerInvariant()))}.");
        if (!ReportWindow.TryParse(from, to, dayCount, time.GetUtcNow(), out var window, out var error))
            return TypedResults.Problem(statusCode: 400, title: "Bad report window", detail: error);
        return TypedResults.Ok(await SpendReport.QueryAsync(store, dimension, window.From, window.To, ct, catalog));
    }

    /// <summary>The what-if ladder over the last <c>days</c> (default 30) of the ledger, with the gateway's own route policies when it has any.</summary>
    private static async Task<Results<Ok<WhatIfLadder>, ProblemHttpResult>> WhatIfAsync(string? days, ILedgerStore ledger, PriceCatalog catalog, RouteTable routes, TimeProvider time, CancellationToken ct)
    {
        var dayCount = AdminBadRequest.OptionalInt(days, nameof(days));
        if (dayCount is <= 0 or > 366) return TypedResults.Problem(statusCode: 400, title: "Bad report window", detail: $"days={days} must be between 1 and 366.");
        var to = time.GetUtcNow();
        var from = to.AddDays(-(dayCount ?? 30));
        var records = await ledger.ReadAsync(new LedgerQuery { From = from, To = to, Limit = MaxWhatIfCalls, Newest = true }, ct);
        // a busy ledger is replayed over the span its newest calls cover (the ladder is monthly either way)
        if (records.Count == MaxWhatIfCalls) from = records[0].Timestamp;
        var routing = routes.Current;
        var assumptions = new WhatIfAssumptions { Routes = routing.Routes.Count > 0 ? routing : null };
        return TypedResults.Ok(WhatIfSimulator.Run(records, catalog, assumptions, from, to));
    }

    /// <summary>The what-if replay behind the dashboard reads at most this many of the newest calls; `bursar simulate` has no limit.</summary>
    public const int MaxWhatIfCalls = 100_000;

}
