using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;

namespace Bursar.Gateway.Endpoints;

/// <summary>
/// <c>GET /openapi/v1.json</c>: the OpenAPI 3.1 document of the admin API (<c>/admin/...</c>: keys, budgets, alerts, rate
/// limits, routes, reports) with its request and response shapes and its RFC 9457 problem-details errors. It is guarded like
/// the admin API it describes: off (404) without <c>Bursar:AdminKey</c>, and sent only with that key.
/// </summary>
public static class OpenApiDocumentApi
{
    public const string DocumentName = "v1";
    public const string Route = "/openapi/{documentName}.json";

    public static IServiceCollection AddBursarOpenApi(this IServiceCollection services) =>
        services.AddOpenApi(DocumentName, o =>
        {
            // the gateway's own routes (/v1/chat/completions, /v1/messages) speak the providers' formats: their documents are the providers'
            o.ShouldInclude = d => d.RelativePath is { } p && p.StartsWith("admin/", StringComparison.Ordinal) || d.RelativePath == "admin";
            o.AddDocumentTransformer((doc, _, _) =>
            {
                doc.Info = new OpenApiInfo
                {
                    Title = "Bursar admin API",
                    Version = DocumentName,
                    Description = "Budgets, rate limits, virtual keys, route policies and spend reports of a Bursar gateway. Every route needs the admin key "
                        + "(Bursar:AdminKey) as 'Authorization: Bearer <key>' or 'x-admin-key'. Bodies and answers are snake_case JSON; every error is RFC 9457 "
                        + "problem details (application/problem+json) whose title and detail name the problem and the fix, with 'field' naming the field at fault when there is one.",
                };
                doc.Components ??= new OpenApiComponents();
                doc.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
                doc.Components.SecuritySchemes["bearer"] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.Http, Scheme = "bearer", Description = "Authorization: Bearer <Bursar:AdminKey>",
                };
                doc.Components.SecuritySchemes["x-admin-key"] = new OpenApiSecurityScheme
                {
                    Type = SecuritySchemeType.ApiKey, In = ParameterLocation.Header, Name = "x-admin-key", Description = "x-admin-key: <Bursar:AdminKey>",
                };
                doc.Security =
                [
                    new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference("bearer", doc)] = [] },
                    new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference("x-admin-key", doc)] = [] },
                ];
                return Task.CompletedTask;
            });
            // a request field that may be null may also be left out (the record's constructor parameter makes it look required)
            o.AddSchemaTransformer((schema, ctx, _) =>
            {
                var type = ctx.JsonTypeInfo.Type;
                if (type.DeclaringType == typeof(AdminApi) && type.Name.EndsWith("Request", StringComparison.Ordinal) && schema.Required is { } required && schema.Properties is { } properties)
                    foreach (var (name, property) in properties)
                        if (property.Type is { } t && t.HasFlag(JsonSchemaType.Null)) required.Remove(name);
                return Task.CompletedTask;
            });
            // the problem details Bursar sends carry the field at fault (and retry_after_seconds on 429)
            o.AddSchemaTransformer((schema, ctx, _) =>
            {
                if (ctx.JsonTypeInfo.Type != typeof(ProblemDetails) && ctx.JsonTypeInfo.Type != typeof(HttpValidationProblemDetails)) return Task.CompletedTask;
                schema.Properties ??= new Dictionary<string, IOpenApiSchema>();
                schema.Properties["field"] = new OpenApiSchema { Type = JsonSchemaType.String | JsonSchemaType.Null, Description = "The request field or parameter at fault (400s), e.g. period, days, allowed_tags." };
                schema.Properties["retry_after_seconds"] = new OpenApiSchema { Type = JsonSchemaType.Integer | JsonSchemaType.Null, Description = "429: seconds to wait (also in the retry-after header)." };
                return Task.CompletedTask;
            });
        });

    public static IEndpointRouteBuilder MapOpenApiDocumentApi(this IEndpointRouteBuilder app)
    {
        app.MapOpenApi(Route).AddEndpointFilter(AdminApi.RequireAdminKey);
        return app;
    }

    /// <summary>The errors every admin route may answer: 401 without the admin key, 404 with the admin API off, 429 after repeated wrong keys.</summary>
    internal static TBuilder ProducesAdminProblems<TBuilder>(this TBuilder builder) where TBuilder : IEndpointConventionBuilder
    {
        foreach (var status in new[] { StatusCodes.Status401Unauthorized, StatusCodes.Status404NotFound, StatusCodes.Status429TooManyRequests })
            builder.WithMetadata(new ProducesResponseTypeMetadata(status, typeof(ProblemDetails), ["application/problem+json"]));
        return builder;
    }
}
