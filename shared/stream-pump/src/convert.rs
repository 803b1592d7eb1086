//! DynamoDB Streams records (the SDK's types) to the record type a Lambda handler receives.

use aws_lambda_events::event::dynamodb::{EventRecord, StreamRecord, StreamViewType, UserIdentity};
use aws_sdk_dynamodbstreams::types;
use chrono::{DateTime, Utc};

/// The record as the Lambda event-source mapping hands it to the function: the stream record
/// as DynamoDB Streams returns it, plus `eventSourceARN` (the stream), which only the mapping
/// knows. Attribute maps are converted by `serde_dynamo` (its `aws-sdk-dynamodbstreams+1`
/// feature), so every attribute type (sets, binaries, nested maps and lists) keeps its type.
pub fn lambda_record(record: types::Record, stream_arn: &str) -> EventRecord {
    let mut out = EventRecord::default();
    out.aws_region = record.aws_region.unwrap_or_default();
    out.event_id = record.event_id.unwrap_or_default();
    out.event_name = record
        .event_name
        .map(|name| name.as_str().to_owned())
        .unwrap_or_default();
    out.event_source = record.event_source;
    out.event_version = record.event_version;
    out.event_source_arn = Some(stream_arn.to_owned());
    out.user_identity = record.user_identity.map(|identity| {
        let mut user = UserIdentity::default();
        user.type_ = identity.r#type.unwrap_or_default();
        user.principal_id = identity.principal_id.unwrap_or_default();
        user
    });
    if let Some(change) = record.dynamodb {
        out.change = stream_record(change);
    }
    out
}

fn stream_record(change: types::StreamRecord) -> StreamRecord {
    let mut out = StreamRecord::default();
    if let Some(at) = change.approximate_creation_date_time {
        if let Some(at) = DateTime::<Utc>::from_timestamp(at.secs(), at.subsec_nanos()) {
            out.approximate_creation_date_time = at;
        }
    }
    out.keys = change.keys.unwrap_or_default().into();
    out.new_image = change.new_image.unwrap_or_default().into();
    out.old_image = change.old_image.unwrap_or_default().into();
    out.sequence_number = change.sequence_number;
    out.size_bytes = change.size_bytes.unwrap_or_default();
    out.stream_view_type = change.stream_view_type.and_then(|view| match view {
        types::StreamViewType::KeysOnly => Some(StreamViewType::KeysOnly),
        types::StreamViewType::NewImage => Some(StreamViewType::NewImage),
        types::StreamViewType::OldImage => Some(StreamViewType::OldImage),
        types::StreamViewType::NewAndOldImages => Some(StreamViewType::NewAndOldImages),
        _ => None,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime as SmithyDateTime};
    use aws_sdk_dynamodbstreams::types::{AttributeValue, Identity, OperationType, Record};

    #[test]
    fn a_record_converts_as_lambda_delivers_it() {
        let change = types::StreamRecord::builder()
            .approximate_creation_date_time(SmithyDateTime::from_secs(1_479_499_740))
            .keys("pk", AttributeValue::S("acme#m-1".into()))
            .new_image("pk", AttributeValue::S("acme#m-1".into()))
            .new_image("n", AttributeValue::N("42".into()))
            .new_image("tags", AttributeValue::Ss(vec!["a".into(), "b".into()]))
            .new_image("raw", AttributeValue::B(Blob::new(vec![1, 2, 3])))
            .new_image(
                "nested",
                AttributeValue::M(
                    [("ok".to_owned(), AttributeValue::Bool(true))]
                        .into_iter()
                        .collect(),
                ),
            )
            .old_image("pk", AttributeValue::S("acme#m-1".into()))
            .sequence_number("000000000000000000001")
            .size_bytes(57)
            .stream_view_type(types::StreamViewType::NewAndOldImages)
            .build();
        let record = Record::builder()
            .event_id("e-1")
            .event_name(OperationType::Modify)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(change)
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .build();
        let arn = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000";
        let out = lambda_record(record, arn);
        // What the handler sees is what Lambda's JSON payload deserializes to.
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json["eventID"], "e-1");
        assert_eq!(json["eventName"], "MODIFY");
        assert_eq!(json["eventSource"], "aws:dynamodb");
        assert_eq!(json["eventVersion"], "1.1");
        assert_eq!(json["awsRegion"], "us-east-1");
        assert_eq!(json["eventSourceARN"], arn);
        assert_eq!(json["userIdentity"]["type"], "Service");
        let dynamodb = &json["dynamodb"];
        assert_eq!(dynamodb["ApproximateCreationDateTime"], 1_479_499_740.0);
        assert_eq!(dynamodb["Keys"]["pk"]["S"], "acme#m-1");
        assert_eq!(dynamodb["NewImage"]["n"]["N"], "42");
        assert_eq!(
            dynamodb["NewImage"]["tags"]["SS"],
            serde_json::json!(["a", "b"])
        );
        assert_eq!(dynamodb["NewImage"]["raw"]["B"], "AQID");
        assert_eq!(dynamodb["NewImage"]["nested"]["M"]["ok"]["BOOL"], true);
        assert_eq!(dynamodb["OldImage"]["pk"]["S"], "acme#m-1");
        assert_eq!(dynamodb["SequenceNumber"], "000000000000000000001");
        assert_eq!(dynamodb["SizeBytes"], 57);
        assert_eq!(dynamodb["StreamViewType"], "NEW_AND_OLD_IMAGES");
        // And it reads back as the same record (the handler's input type round-trips).
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn an_insert_without_old_image_has_an_empty_one() {
        let record = Record::builder()
            .event_name(OperationType::Insert)
            .dynamodb(
                types::StreamRecord::builder()
                    .keys("pk", AttributeValue::S("k".into()))
                    .sequence_number("1")
                    .build(),
            )
            .build();
        let out = lambda_record(record, "arn");
        assert_eq!(out.event_name, "INSERT");
        assert!(out.change.old_image.is_empty());
        assert!(out.change.new_image.is_empty());
        assert_eq!(out.change.keys.len(), 1);
    }
}
